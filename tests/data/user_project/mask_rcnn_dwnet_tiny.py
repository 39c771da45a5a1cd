# A user's own mmdet config: inherit an upstream base, swap in DWNet (the
# README's recipe, without the checkpoint). In the mmdet scope DWNet returns
# the four feature maps FPN takes by default.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='DWNet', arch='tiny', drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]))

# Cascade Mask R-CNN + FPN + D-DWNet-B, COCO, 3x schedule (36 epochs),
# multi-scale + crop training, 8 GPUs x 2 images, mixed precision. Paper: 51.2
# box AP, 44.4 mask AP, 219M params, 924G FLOPs at 1280x800.
_base_ = './_base_/cascade_dwnet_3x_coco.py'

# ImageNet-1K weights of the backbone: a dwnet_mm classification checkpoint
# (configs/cls) or the authors' released dynamic_dwnet_base file; DWNet's
# Pretrained init reads both layouts. Edit this path, or pass
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
checkpoint_file = 'checkpoints/dynamic_dwnet_base_in1k.pth'

model = dict(
    backbone=dict(
        arch='base',
        conv_type='dynamic',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

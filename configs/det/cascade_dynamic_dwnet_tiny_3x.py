# Cascade Mask R-CNN + FPN + D-DWNet-T, COCO, 3x schedule (36 epochs),
# multi-scale + crop training, 8 GPUs x 2 images, mixed precision. Paper: 50.5
# box AP, 43.7 mask AP, 108M params, 730G FLOPs at 1280x800.
_base_ = './_base_/cascade_dwnet_3x_coco.py'

# ImageNet-1K weights of the backbone: a dwnet_mm classification checkpoint
# (configs/cls) or the authors' released dynamic_dwnet_tiny file; DWNet's
# Pretrained init reads both layouts. Edit this path, or pass
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
checkpoint_file = 'checkpoints/dynamic_dwnet_tiny_in1k.pth'

model = dict(
    backbone=dict(
        arch='tiny',
        conv_type='dynamic',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# UPerNet + DWNet-T, ADE20K, 160k iterations, 512x512 crops,
# 8 GPUs x 2 images. Paper: 45.5 mIoU (single scale), 56M params,
# 928G FLOPs at 2048x512.
_base_ = './_base_/upernet_dwnet_160k_ade20k.py'

# ImageNet-1K weights of the backbone: a dwnet_mm classification checkpoint
# (configs/cls) or the authors' released dwnet_tiny file; DWNet's
# Pretrained init reads both layouts. Edit this path, or pass
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
checkpoint_file = 'checkpoints/dwnet_tiny_in1k.pth'

model = dict(
    backbone=dict(
        arch='tiny',
        conv_type='static',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

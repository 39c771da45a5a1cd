# UPerNet + D-DWNet-B, ADE20K, 160k iterations, 512x512 crops,
# 8 GPUs x 2 images. Paper: 48.0 mIoU (single scale), 195M params,
# 1129G FLOPs at 2048x512.
_base_ = './_base_/upernet_dwnet_160k_ade20k.py'

# ImageNet-1K weights of the backbone: a dwnet_mm classification checkpoint
# (configs/cls) or the authors' released dynamic_dwnet_base file; DWNet's
# Pretrained init reads both layouts. Edit this path, or pass
# `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
checkpoint_file = 'checkpoints/dynamic_dwnet_base_in1k.pth'

model = dict(
    backbone=dict(
        arch='base',
        conv_type='dynamic',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))

# DWNet-B (static depth-wise conv)
# on ImageNet-1K, 224x224: 16 GPUs x 64 images (two nodes),
# fp32 (the authors saw anomalous gradients with AMP at this size).
# Paper: 74M params, 12.9G FLOPs, top-1 83.2, ReaL 87.9.
_base_ = ['./_base_/dwnet_in1k_224.py']

model = dict(
    backbone=dict(arch='base', conv_type='static', drop_path_rate=0.5),
    head=dict(in_channels=1024))

# batch 64 per GPU comes from the mmpretrain dataset base.
optim_wrapper = dict(type='OptimWrapper')

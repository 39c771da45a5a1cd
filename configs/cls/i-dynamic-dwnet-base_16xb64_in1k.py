# I-Dynamic-B (kernel per position, 32 channel groups)
# on ImageNet-1K, 224x224: 16 GPUs x 64 images (two nodes),
# fp32 (the authors saw anomalous gradients with AMP at this size).
# Paper: 80M params, 14.3G FLOPs, top-1 83.4, ReaL 88.0.
_base_ = ['./_base_/dwnet_in1k_224.py']

model = dict(
    backbone=dict(arch='base', conv_type='i_dynamic', drop_path_rate=0.5),
    head=dict(in_channels=1024))

# batch 64 per GPU comes from the mmpretrain dataset base.
optim_wrapper = dict(type='OptimWrapper')

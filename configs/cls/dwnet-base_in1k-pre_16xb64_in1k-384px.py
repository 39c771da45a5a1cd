# DWNet-B fine-tuned at 384x384 from its 224x224 ImageNet-1K model,
# keeping the 7x7 depth-wise kernels.
# The paper reports 384 fine-tuning for the tiny model only.
# 16 GPUs x 64 images (two nodes), fp32.
_base_ = ['./_base_/dwnet_in1k_384_finetune.py']

# The 224x224 model to start from; see the base file for the accepted
# checkpoint kinds.
checkpoint_224 = 'checkpoints/dwnet-base_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        kernel_size=7,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_224)),
    head=dict(in_channels=1024, init_cfg=dict(checkpoint=checkpoint_224)))

# batch 64 per GPU comes from the mmpretrain dataset base.
optim_wrapper = dict(type='OptimWrapper')

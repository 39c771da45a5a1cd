# DWNet-B fine-tuned at 384x384 from its 224x224 ImageNet-1K model,
# with the 7x7 depth-wise kernels upsampled to 12x12 (the final map is
# 12x12 at 384). `resize_kernels=True` makes the Pretrained loader
# interpolate every 7x7 kernel of the checkpoint bicubically to 12x12,
# rescaled to keep each kernel's sum; without it the size mismatch is
# an error.
# The paper reports 384 fine-tuning for the tiny model only.
# 16 GPUs x 64 images (two nodes), fp32.
_base_ = ['./_base_/dwnet_in1k_384_finetune.py']

# The 224x224 model to start from; see the base file for the accepted
# checkpoint kinds.
checkpoint_224 = 'checkpoints/dwnet-base_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        kernel_size=12,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_224,
            resize_kernels=True)),
    head=dict(in_channels=1024, init_cfg=dict(checkpoint=checkpoint_224)))

# batch 64 per GPU comes from the mmpretrain dataset base.
optim_wrapper = dict(type='OptimWrapper')

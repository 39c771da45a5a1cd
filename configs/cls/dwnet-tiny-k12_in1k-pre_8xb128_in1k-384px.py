# DWNet-T fine-tuned at 384x384 from its 224x224 ImageNet-1K model,
# with the 7x7 depth-wise kernels upsampled to 12x12 (the final map is
# 12x12 at 384). `resize_kernels=True` makes the Pretrained loader
# interpolate every 7x7 kernel of the checkpoint bicubically to 12x12,
# rescaled to keep each kernel's sum; without it the size mismatch is
# an error.
# Paper (Table 5): top-1 82.1.
# 8 GPUs x 128 images, mixed precision.
_base_ = ['./_base_/dwnet_in1k_384_finetune.py']

# The 224x224 model to start from; see the base file for the accepted
# checkpoint kinds.
checkpoint_224 = 'checkpoints/dwnet-tiny_in1k.pth'
model = dict(
    backbone=dict(
        arch='tiny',
        kernel_size=12,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_224,
            resize_kernels=True)),
    head=dict(in_channels=768, init_cfg=dict(checkpoint=checkpoint_224)))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

# DWNet-T fine-tuned at 384x384 from its 224x224 ImageNet-1K model,
# keeping the 7x7 depth-wise kernels.
# Paper (Table 5): top-1 82.2.
# 8 GPUs x 128 images, mixed precision.
_base_ = ['./_base_/dwnet_in1k_384_finetune.py']

# The 224x224 model to start from; see the base file for the accepted
# checkpoint kinds.
checkpoint_224 = 'checkpoints/dwnet-tiny_in1k.pth'
model = dict(
    backbone=dict(
        arch='tiny',
        kernel_size=7,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_224)),
    head=dict(in_channels=768, init_cfg=dict(checkpoint=checkpoint_224)))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

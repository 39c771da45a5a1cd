# I-Dynamic-T (kernel per position, 32 channel groups)
# on ImageNet-1K, 224x224: 8 GPUs x 128 images, mixed precision.
# Paper: 26M params, 4.4G FLOPs, top-1 81.8, ReaL 87.1.
_base_ = ['./_base_/dwnet_in1k_224.py']

model = dict(
    backbone=dict(arch='tiny', conv_type='i_dynamic', drop_path_rate=0.2),
    head=dict(in_channels=768))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

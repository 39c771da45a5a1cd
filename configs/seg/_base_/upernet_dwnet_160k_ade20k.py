# UPerNet + DWNet on ADE20K, 160k iterations at 512x512: the Swin recipe
# that the paper follows. The model variants only set the backbone (arch,
# conv_type, pretrained weights) and the head widths.
#
# Single-scale mIoU is the default test; multi-scale (ratios 0.5..1.75) +
# flip is `tools/test.py CONFIG CKPT --tta`, which swaps in the `tta_model`
# (default_runtime) and `tta_pipeline` (datasets/ade20k) inherited below.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

crop_size = (512, 512)
# SyncBN in the backbone and both heads (plain BN when not distributed:
# mmengine's Runner reverts SyncBN for single-process runs).
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='DWNet',
        arch='tiny',
        conv_type='static',
        kernel_size=7,
        drop_path_rate=0.3,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        # The released segmentation weights were trained with each block's
        # input zero-padded to a multiple of the kernel size.
        pad_to_window=True,
        norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[96, 192, 384, 768],
        channels=512,
        pool_scales=(1, 2, 3, 6),
        num_classes=150,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=384, in_index=2, num_classes=150, norm_cfg=norm_cfg))

# AdamW (PyTorch's fused kernel) without weight decay on the weights and
# biases of every norm layer (BN/SyncBN of the backbone and heads, LN of the
# stem and patch merging).
# The authors' mmseg 0.x configs used Swin's custom_keys={'norm': ...},
# which by name missed their blocks' BNs (named bn*); see README.md.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=6e-5,
        betas=(0.9, 0.999),
        weight_decay=0.01,
        fused=True),
    paramwise_cfg=dict(norm_decay_mult=0.))

# 1500 linear warm-up iterations from lr x 1e-6, then poly decay (power 1).
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]

# 8 GPUs x 2 images = batch 16.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)

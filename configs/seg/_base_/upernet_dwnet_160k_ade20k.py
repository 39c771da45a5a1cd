# UPerNet + DWNet on ADE20K, 160k iterations at 512x512: the Swin recipe
# that the paper follows. The model variants only set the backbone (arch,
# conv_type, pretrained weights) and the head widths.
#
# Single-scale mIoU (2048x512, keep ratio) is the default test; multi-scale
# + flip is `tools/test.py CONFIG CKPT --tta`, which swaps in the
# `tta_model` (from mmseg's default_runtime) and the `tta_pipeline` below.
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

# AdamW (PyTorch's fused kernel). Weight decay as the authors' config
# applies it (custom_keys 'norm' on their parameter names): only the stem's
# and patch mergings' LayerNorms and the output norms norm0..norm3 are
# exempt; the DW blocks' BNs, the heads' SyncBNs and all biases are
# decayed. The keys below name those layers in dwnet_mm's names, where
# some block BNs do contain "norm" (blocks.*.norm, mixer.depthwise.norm: the
# authors' bn and attn2conv.bn).
# To exempt every norm layer instead:
#   --cfg-options optim_wrapper.paramwise_cfg.norm_decay_mult=0
no_decay = dict(decay_mult=0.)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=6e-5,
        betas=(0.9, 0.999),
        weight_decay=0.01,
        fused=True),
    paramwise_cfg=dict(
        custom_keys={
            'backbone.patch_embed.norm': no_decay,
            'downsample.norm': no_decay,
            'backbone.norm': no_decay,  # norm0..norm3
        }))

# The authors' mmcv 1.x schedule: at iteration i, lr x (1 - i / 160000)
# (poly, power 1), times (1e-6 + (1 - 1e-6) * i / 1500) during the first
# 1500 iterations (linear warm-up from ratio 1e-6). The two schedulers
# multiply; mmengine's LinearLR and PolyLR reach their end value at
# iteration end - 1, hence the ends 1501 and 160001.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1501),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=0,
        end=160001,
        by_epoch=False)
]

# Multi-scale + flip test as the authors' mmseg 0.x MultiScaleFlipAug ran
# it: ratios 0.5..1.75 of the (2048, 512) test scale (each image resized to
# fit inside the scaled box, aspect ratio kept), each also flipped; the
# softmax outputs are averaged. (mmseg's own ade20k tta_pipeline scales the
# original image instead.)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(2048 * r), int(512 * r)),
                    keep_ratio=True) for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]

# 8 GPUs x 2 images = batch 16.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)

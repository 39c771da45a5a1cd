# Demo (tools/demo.py, `make demo`): the UPerNet + DWNet-T ADE20K config,
# shrunk to train from scratch on a laptop CPU in a few minutes. It segments
# the synthetic shapes of data/demo/ade (the ADE20K layout: images/*.jpg,
# annotations/*.png; 128x128; written by dwnet_mm.demo).
# Labels follow ADE20K (reduce_zero_label=True): png 0 = unlabelled
# (ignored), 1 = background, 2.. = shapes, trained and scored as 0.. .
# The class names are not ADE20K's, so the dataset is mmseg's generic
# BaseSegDataset with ADE20KDataset's suffixes and label reduction.
# What differs from the real config: model widths (DWNet 32..256, UPerNet
# 128), no pretrained weights, data, the schedule and BN instead of SyncBN.
_base_ = './upernet_dwnet_tiny_160k_ade20k.py'

classes = ('background', 'circle', 'square', 'star', 'triangle')
palette = [[120, 120, 120], [230, 25, 75], [60, 180, 75], [255, 225, 25],
           [0, 130, 200]]
data_root = 'data/demo/ade'
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(
            _delete_=True, channels=[32, 64, 128, 256], depths=[1, 1, 2, 1]),
        drop_path_rate=0.0,
        # Padding to the kernel size only matters for the authors' weights.
        pad_to_window=False,
        norm_cfg=norm_cfg,
        # DWNet's own initialisation instead of ImageNet weights.
        init_cfg=[
            dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
            dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
        ]),
    # 128 channels (512 in the real config): at 32 or 64, early in
    # training the ReLUs of the fused features switch off for whole classes
    # and those classes are not learned within the demo's schedule.
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        channels=128,
        num_classes=len(classes),
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=128,
        channels=32,
        num_classes=len(classes),
        norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=crop_size,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
shapes_dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**shapes_dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(**shapes_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
# No weight decay on any norm layer, as the demo was tuned (the recipe's
# partition is the authors', see the base).
optim_wrapper = dict(
    optimizer=dict(lr=1e-3),
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0,
         end=50),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=50,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=8)

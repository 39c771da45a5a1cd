# Demo (tools/demo.py, `make demo`): the DWNet-T ImageNet config, shrunk to
# run on a laptop CPU in about two minutes. It classifies the synthetic
# shapes of data/demo/imagenet (ImageNet class folders, 4 classes, 64x64;
# written by dwnet_mm.demo) with a 4-stage DWNet of widths 32..256.
# What differs from the real config: model size, data, a light pipeline
# (no RandAugment/erasing/Mixup/CutMix), the schedule and a fixed lr, and
# plain fp32 OptimWrapper (mmengine's AmpOptimWrapper needs a GPU).
_base_ = './dwnet-tiny_8xb128_in1k.py'

classes = ('circle', 'square', 'star', 'triangle')  # sorted folder names
data_root = 'data/demo/imagenet'
image_size = 64

data_preprocessor = dict(num_classes=len(classes))
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True, channels=[32, 64, 128, 256], depths=[1, 1, 2, 1]),
        drop_path_rate=0.0),
    head=dict(num_classes=len(classes), in_channels=256),
    train_cfg=None)  # no Mixup/CutMix

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=image_size,
        crop_ratio_range=(0.6, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=50,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 5
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=2e-3,
        betas=(0.9, 0.999),
        weight_decay=0.05,
        fused=True),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-2,
        by_epoch=True,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True)
]
# Validate once, after the last epoch.
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
randomness = dict(seed=0)
# A fixed lr (the ImageNet recipe scales it with the total batch).
auto_scale_lr = dict(enable=False, base_batch_size=32)

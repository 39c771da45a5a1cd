"""A shrunken DWNet classifier for the tools tests (tests/test_tools).

The tests write a two-class ImageNet folder copy and pass it with
``--cfg-options data_root=...``-style overrides of the three dataloaders.
Everything that could differ between two runs is fixed: the seed, no random
augmentation, an unshuffled sampler and no drop path, so an interrupted and
resumed run ends with the same weights as an uninterrupted one.
"""
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

classes = ('n01440764', 'n01443537')
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DWNet',
        arch=dict(channels=[8, 16, 32, 64], depths=[1, 1, 1, 1]),
        drop_path_rate=0.,
        out_type='avg_featmap',
        out_indices=-1,
        # As in the det/seg configs: the tools must swap SyncBN for BN when
        # several processes share no GPU.
        norm_cfg=dict(type='SyncBN')),
    neck=None,
    head=dict(type='LinearClsHead',
              num_classes=len(classes),
              in_channels=64,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, )))
data_preprocessor = dict(num_classes=len(classes))

pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=32),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=2,
                        num_workers=0,
                        dataset=dict(data_root='data/imagenet_tiny',
                                     metainfo=dict(classes=classes),
                                     pipeline=pipeline),
                        sampler=dict(type='DefaultSampler', shuffle=False))
val_dataloader = dict(batch_size=2,
                      num_workers=0,
                      dataset=dict(data_root='data/imagenet_tiny',
                                   metainfo=dict(classes=classes),
                                   pipeline=pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# AdamW and a per-iteration lr schedule give the resume test optimizer
# state and a learning rate that both change every iteration.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR',
         start_factor=0.1,
         by_epoch=True,
         begin=0,
         end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR',
         by_epoch=True,
         begin=1,
         end=3,
         T_max=2,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=3)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0, deterministic=True)

# tools/test.py --tta: the mean score of the image and its mirror image.
tta_model = dict(type='AverageClsScoreTTA')
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[
             [dict(type='Resize', scale=32)],
             [
                 dict(type='RandomFlip', prob=0.),
                 dict(type='RandomFlip', prob=1.)
             ],
             [dict(type='PackInputs')],
         ]),
]

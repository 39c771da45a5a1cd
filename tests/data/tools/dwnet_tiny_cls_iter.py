"""The tiny classifier trained by iterations, as the segmentation configs.

12 iterations (3 passes over the 8 training images in batches of 2),
a checkpoint every 5 iterations.
"""
_base_ = ['./dwnet_tiny_cls.py']

param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=4, end=12, T_max=8),
]
train_cfg = dict(_delete_=True,
                 type='IterBasedTrainLoop',
                 max_iters=12,
                 val_interval=12)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5))
log_processor = dict(by_epoch=False)
train_dataloader = dict(sampler=dict(type='InfiniteSampler', shuffle=False))

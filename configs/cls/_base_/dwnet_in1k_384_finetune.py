# Fine-tuning an ImageNet-1K 224x224 DWNet at 384x384 (paper, "Retraining
# on 384x384"): 30 epochs, lr 1e-5, weight decay 1e-8, drop path 0.1, the
# 224 recipe's augmentations at 384. Warm-up (5 epochs) and the final lr
# (1e-7) follow the Swin fine-tuning recipe that the authors built on.
#
# The model configs set the 224 checkpoint to start from. Any of these
# works: a dwnet_mm/mmpretrain classifier checkpoint (work_dirs/.../
# epoch_300.pth), or an authors' release file converted with
# tools/model_converters/dwnet_to_mmpretrain.py (the converted file also
# carries the 1000-class head). Point both init_cfg entries at it, e.g.
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH \
#                 model.head.init_cfg.checkpoint=PATH
_base_ = ['./dwnet_in1k_224.py']

model = dict(
    backbone=dict(drop_path_rate=0.1),
    # The classifier is fine-tuned too: load the head's weights (keys
    # "head.*" of the checkpoint).
    head=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                            prefix='head')))

# dataset settings: the 224 augmentations at 384; test on the whole image
# resized to 384x384, as mmpretrain's Swin 384 evaluation.
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=384,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# schedule settings
optim_wrapper = dict(optimizer=dict(lr=1e-5, weight_decay=1e-8))
# The authors' trainer, as at 224: warm-up from lr x 1e-3, one cosine over
# all 30 epochs to lr x 1e-2, set every iteration.
param_scheduler = [
    dict(
        type='WarmupCosineLR',
        warmup=5,
        warmup_ratio=1e-3,
        eta_min_ratio=1e-2,
        by_epoch=True,
        convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)

# DWNet on ImageNet-1K at 224x224: the Swin Transformer recipe used by the
# paper (REFERENCE section 4). The model configs next to this file pick the
# backbone variant, the batch layout and the precision.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

# model settings
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DWNet',
        arch='tiny',
        conv_type='static',
        kernel_size=7,
        drop_path_rate=0.2,
        # The authors' classifier: the last stage, LayerNorm, global pooling
        # in the backbone, hence no neck.
        out_type='avg_featmap',
        out_indices=-1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        init_cfg=None,  # use the classifier's TruncNormal init below
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    # Mixup 0.8 / CutMix 1.0, one of them per batch (switch prob 0.5).
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]),
)

# dataset settings
# mmpretrain's Swin pipeline already is the recipe: bicubic
# RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing
# 0.25; test: resize the short edge to 256, center crop 224. The recipe's
# color jitter 0.4 is absent on purpose: timm (which the authors' Swin code
# used) skips color jitter whenever RandAugment is on.
# `data_root` holds either train/<class>/*.JPEG and val/<class>/*.JPEG
# folders, or meta/{train,val}.txt lists ("relative/path.JPEG label") next
# to flat train/ and val/ folders; the lists are used when present.
# drop_last: the authors' trainer drops each epoch's incomplete last batch,
# which fixes the iterations per epoch that the lr schedule counts in.
train_dataloader = dict(drop_last=True,
                        dataset=dict(data_root='data/imagenet'))
val_dataloader = dict(dataset=dict(data_root='data/imagenet'))
test_dataloader = val_dataloader

# Top-1 / top-5 accuracy (from the mmpretrain base). To also report
# ImageNet-ReaL top-1 ("real/top1"), get real.json (google-research/
# reassessed-imagenet) and keep the original val file names
# (ILSVRC2012_val_XXXXXXXX.JPEG), then write a two-line config of your own
# (--cfg-options cannot pass a list of dicts):
#   _base_ = './dwnet-tiny_8xb128_in1k.py'  # relative to your config file
#   val_evaluator = [
#       dict(type='Accuracy', topk=(1, 5)),
#       dict(type='ImageNetReaLAccuracy',
#            real_labels_file='data/imagenet/real.json'),
#   ]
#   test_evaluator = val_evaluator

# schedule settings
# AdamW lr 1e-3 at 1024 images per update, wd 0.05 except on 1-D parameters
# (norms) and biases, as the authors' trainer groups them (timm style);
# gradients clipped to norm 5. 300 epochs (train_cfg from the mmpretrain
# base).
# fused=True: PyTorch's one-kernel AdamW, the same update as its default
# per-parameter loop at a fraction of the time (CUDA and CPU); `fused=False`
# for the loop.
optim_wrapper = dict(
    optimizer=dict(fused=True),
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0),
)
# The authors' timm cosine, set every iteration: 20 linear warm-up epochs
# from lr x 1e-3 (1e-6), then one cosine over all 300 epochs (its phase
# counts from iteration 0, not from the end of the warm-up) down to
# lr x 1e-2 (1e-5). See dwnet_mm.engine.WarmupCosineLR.
param_scheduler = [
    dict(
        type='WarmupCosineLR',
        warmup=20,
        warmup_ratio=1e-3,
        eta_min_ratio=1e-2,
        by_epoch=True,
        convert_to_iter_based=True)
]

# runtime settings
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='auto'),
)

# The authors' trainer scales the lr (peak, and so warm-up start and final
# lr) linearly with the images per update on every run: 1e-3 at 1024.
# mmengine's Runner does it from world size x batch per GPU; a config that
# accumulates gradients over n micro-batches sets base_batch_size=1024 // n.
auto_scale_lr = dict(enable=True, base_batch_size=1024)

# Cascade Mask R-CNN + FPN + DWNet on COCO, 3x schedule (36 epochs) with
# multi-scale + crop training: the Swin recipe that the paper follows
# (REFERENCE.md section 4). The model variants only set the backbone (arch,
# conv_type, drop_path_rate, pretrained weights) and the FPN input widths.
#
# Test: single scale, short side 800 / long side <= 1333 (from the dataset
# base). The released weights (mmdet 2.x) are converted for this config by
# tools/model_converters/dwnet_det_to_mmdet.py.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

# SyncBN in the backbone and the box heads (plain BN when not distributed:
# mmengine's Runner reverts SyncBN for single-process runs).
norm_cfg = dict(type='SyncBN', requires_grad=True)

# RPN, RoI extractors and the three FCN mask heads come from the base
# model; the variants add the backbone's Pretrained init_cfg.
model = dict(
    backbone=dict(
        _delete_=True,
        type='DWNet',
        arch='tiny',
        conv_type='static',
        kernel_size=7,
        drop_path_rate=0.2,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        # The released detection weights were trained with each block's
        # input zero-padded to a multiple of the kernel size.
        pad_to_window=True,
        norm_cfg=norm_cfg),
    neck=dict(in_channels=[96, 192, 384, 768], out_channels=256, num_outs=5),
    # Three Shared4Conv1FC box heads: class-specific regression of decoded
    # boxes with GIoU loss; only the delta normalisation differs per stage.
    roi_head=dict(bbox_head=[
        dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=target_stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=norm_cfg,
            loss_cls=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for target_stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                            [0.033, 0.033, 0.067, 0.067])
    ]))

# Random flip, then either (a) a random short side in 480..800 (step 32,
# long side <= 1333) or (b) a short side of 400/500/600, a random crop of
# 384..600 pixels, and (a).
multi_scales = [(short, 1333) for short in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=multi_scales,
                    keep_ratio=True)
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize',
                    scales=multi_scales,
                    keep_ratio=True)
            ],
        ]),
    dict(type='PackDetInputs')
]
# 8 GPUs x 2 images = batch 16.
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# 36 epochs, lr x 0.1 after epochs 27 and 33, 500 linear warm-up
# iterations: lr x (0.001 + 0.999 * i / 500) at iteration i < 500, as the
# authors' mmcv 1.x hook. (mmengine's LinearLR reaches its end factor at
# iteration end - 1, hence end=501.)
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=501),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]

# AdamW (PyTorch's fused kernel) with mixed precision. Weight decay as the
# authors' config applies it (custom_keys 'norm' on their parameter names):
# only the stem's and patch mergings' LayerNorms and the output norms
# norm0..norm3 are exempt; the DW blocks' BNs, the box heads' SyncBNs and
# all biases are decayed. The keys below name those layers in dwnet_mm's
# names, where some block BNs do contain "norm" (blocks.*.norm,
# mixer.depthwise.norm: the authors' bn and attn2conv.bn).
# To exempt every norm layer instead:
#   --cfg-options optim_wrapper.paramwise_cfg.norm_decay_mult=0
no_decay = dict(decay_mult=0.)
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.05,
        fused=True),
    paramwise_cfg=dict(
        custom_keys={
            'backbone.patch_embed.norm': no_decay,
            'downsample.norm': no_decay,
            'backbone.norm': no_decay,  # norm0..norm3
        }))

auto_scale_lr = dict(enable=False, base_batch_size=16)

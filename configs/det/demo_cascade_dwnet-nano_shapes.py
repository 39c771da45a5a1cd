# Demo (tools/demo.py, `make demo`): the Cascade Mask R-CNN + DWNet-T config,
# shrunk to train from scratch on a laptop CPU in a few minutes. It detects
# and segments the synthetic shapes of data/demo/coco (COCO instances json
# with polygon masks, 4 classes, 128x128 images; written by dwnet_mm.demo).
# What differs from the real config: model widths (DWNet 32..256, FPN and
# heads 64), no pretrained weights, data, fewer proposals and RoI samples,
# the schedule, BN instead of SyncBN and fp32 OptimWrapper (mmengine's
# AmpOptimWrapper needs a GPU).
#
#   tools/dist_train.sh configs/det/demo_cascade_dwnet-nano_shapes.py 2
# trains it with 2 processes (gloo on CPU).
_base_ = './cascade_dwnet_tiny_3x.py'

classes = ('circle', 'square', 'star', 'triangle')
data_root = 'data/demo/coco/'
width = 64  # FPN, RPN and RoI feature channels
head_width = 32  # convs of the box and mask heads
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
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
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=[
            dict(
                type='Shared4Conv1FCBBoxHead',
                in_channels=width,
                conv_out_channels=head_width,
                fc_out_channels=128,
                roi_feat_size=7,
                num_classes=len(classes),
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=target_stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=norm_cfg,
                loss_cls=dict(
                    type='CrossEntropyLoss', use_sigmoid=False,
                    loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
            for target_stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                                [0.033, 0.033, 0.067, 0.067])
        ],
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(
            in_channels=width,
            conv_out_channels=head_width,
            num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=500),
        # 32 RoIs per image and stage (512 in the real config): there are
        # at most 3 objects per image.
        rcnn=[
            dict(
                assigner=dict(
                    type='MaxIoUAssigner',
                    pos_iou_thr=iou,
                    neg_iou_thr=iou,
                    min_pos_iou=iou,
                    match_low_quality=False,
                    ignore_iof_thr=-1),
                sampler=dict(
                    type='RandomSampler',
                    num=32,
                    pos_fraction=0.25,
                    neg_pos_ub=-1,
                    add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in (0.5, 0.6, 0.7)
        ]),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # The images are 128x128 already; Resize records the scale factor.
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
        end=100),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=0,
        end=max_epochs,
        convert_to_iter_based=True)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=1e-3,
        betas=(0.9, 0.999),
        weight_decay=0.05,
        fused=True),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=10.0))

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=4)

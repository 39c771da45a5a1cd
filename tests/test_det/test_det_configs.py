"""The COCO Cascade Mask R-CNN configs: recipe terms, and the detectors
they build."""
import glob
import os.path as osp

import pytest
import torch
from det_test_utils import (DET_CONFIG_DIR, DET_CONFIGS, SMALL_ARCH,
                            SMALL_FC, SMALL_FPN, TINY_CONFIG_OF,
                            load_det_config, shrink_model_cfg)
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

from dwnet_mm.models import DWNet
from dwnet_mm.utils.complexity_det import (PAPER_DET_MODELS,
                                           CascadeDummyForward,
                                           count_detector_complexity)


def _build_detector(model_cfg, custom_imports):
    import_modules_from_strings(**custom_imports)
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(model_cfg)


def _all_pipeline_steps(pipeline):
    for transform in pipeline:
        yield transform
        if transform['type'] == 'RandomChoice':
            for branch in transform['transforms']:
                yield from _all_pipeline_steps(branch)


def test_every_config_is_tested():
    found = {
        osp.basename(p)
        for p in glob.glob(osp.join(DET_CONFIG_DIR, 'cascade_*.py'))
    }
    assert found == set(DET_CONFIGS)
    assert {n + '.py' for n in PAPER_DET_MODELS} == set(DET_CONFIGS)


@pytest.mark.parametrize('config_name', sorted(DET_CONFIGS))
def test_recipe(config_name):
    arch, conv_type, drop_path_rate = DET_CONFIGS[config_name]
    widths = DWNet.arch_settings[arch]['channels']
    cfg = load_det_config(config_name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(
        imports=['dwnet_mm'], allow_failed_imports=False)

    model = cfg.model
    assert model.type == 'CascadeRCNN'
    backbone = model.backbone
    assert backbone.type == 'DWNet'
    assert (backbone.arch, backbone.conv_type) == (arch, conv_type)
    assert backbone.drop_path_rate == drop_path_rate
    assert backbone.out_type == 'featmap'
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.pad_to_window is True
    assert backbone.kernel_size == 7
    # Nothing of ResNet's backbone settings survives the _delete_.
    for key in ('depth', 'frozen_stages', 'norm_eval', 'style'):
        assert key not in backbone
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=cfg.checkpoint_file)
    assert cfg.checkpoint_file.endswith(
        config_name[len('cascade_'):-len('_3x.py')] + '_in1k.pth')

    neck = model.neck
    assert neck.type == 'FPN'
    assert list(neck.in_channels) == widths
    assert (neck.out_channels, neck.num_outs) == (256, 5)

    roi_head = model.roi_head
    assert roi_head.type == 'CascadeRoIHead'
    assert roi_head.num_stages == 3
    assert len(roi_head.bbox_head) == 3
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067]]
    for head, target_stds in zip(roi_head.bbox_head, stds):
        assert head.type == 'Shared4Conv1FCBBoxHead'
        assert (head.conv_out_channels, head.fc_out_channels) == (256, 1024)
        assert head.norm_cfg.type == 'SyncBN'
        assert head.reg_class_agnostic is False
        assert head.reg_decoded_bbox is True
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.bbox_coder.target_stds == target_stds
        assert head.num_classes == 80
    assert roi_head.mask_head.type == 'FCNMaskHead'
    assert roi_head.mask_head.num_classes == 80

    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper'
    assert optim.optimizer == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05,
        fused=True)
    # The authors' partition (tests/test_recipes checks it on the models).
    no_decay = dict(decay_mult=0.)
    assert optim.paramwise_cfg == dict(custom_keys={
        'backbone.patch_embed.norm': no_decay,
        'downsample.norm': no_decay,
        'backbone.norm': no_decay})
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=0.001,
                          by_epoch=False, begin=0, end=501)
    assert steps == dict(type='MultiStepLR', begin=0, end=36, by_epoch=True,
                         milestones=[27, 33], gamma=0.1)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.batch_size == 2

    train = cfg.train_dataloader.dataset
    assert train.type == 'CocoDataset'
    steps = list(_all_pipeline_steps(train.pipeline))
    types = [t['type'] for t in train.pipeline]
    assert types == ['LoadImageFromFile', 'LoadAnnotations', 'RandomFlip',
                     'RandomChoice', 'PackDetInputs']
    assert steps[1].with_mask is True
    choice = train.pipeline[3]
    plain, cropped = choice.transforms
    multi = [(s, 1333) for s in range(480, 801, 32)]
    assert [t['type'] for t in plain] == ['RandomChoiceResize']
    assert plain[0].scales == multi and plain[0].keep_ratio
    assert [t['type'] for t in cropped] == [
        'RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize'
    ]
    assert cropped[0].scales == [(400, 1333), (500, 1333), (600, 1333)]
    assert cropped[1].crop_type == 'absolute_range'
    assert tuple(cropped[1].crop_size) == (384, 600)
    assert cropped[2].scales == multi

    test = cfg.test_dataloader.dataset
    resize = [t for t in test.pipeline if t['type'] == 'Resize']
    assert len(resize) == 1 and resize[0].scale == (1333, 800)
    assert resize[0].keep_ratio
    assert cfg.test_evaluator.type == 'CocoMetric'
    assert list(cfg.test_evaluator.metric) == ['bbox', 'segm']


@pytest.mark.parametrize('config_name', sorted(DET_CONFIGS))
def test_builds_full_detector_with_paper_params(config_name):
    """The full-size detector builds, runs, and has the paper's params."""
    arch, conv_type, _ = DET_CONFIGS[config_name]
    cfg = load_det_config(config_name)
    cfg.model.backbone.init_cfg = None
    detector = _build_detector(cfg.model, cfg.custom_imports)
    assert type(detector).__name__ == 'CascadeRCNN'
    assert detector.backbone.conv_type == conv_type
    assert [type(h).__name__ for h in detector.roi_head.bbox_head] == \
        ['Shared4Conv1FCBBoxHead'] * 3
    params = sum(p.numel() for p in detector.parameters())
    paper_params = PAPER_DET_MODELS[config_name[:-3]][0]
    assert params / 1e6 == pytest.approx(paper_params, rel=0.03)
    if arch == 'tiny':  # the FPN takes the stage widths
        detector.eval()
        with torch.no_grad():
            feats = detector.extract_feat(torch.randn(1, 3, 64, 96))
        assert [tuple(f.shape[1:]) for f in feats] == [
            (256, 16, 24), (256, 8, 12), (256, 4, 6), (256, 2, 3),
            (256, 1, 2)
        ]


def test_dummy_forward_counts_like_mmdet2():
    """The FLOP count of the roi heads: 3 box heads on 1000 proposals and 3
    mask heads on 100, by hand (multiply-accumulates)."""
    cfg = load_det_config(TINY_CONFIG_OF['static'])
    shrink_model_cfg(cfg.model, 'static')
    cfg.model.backbone.init_cfg = None
    detector = _build_detector(cfg.model, cfg.custom_imports)
    c, fc, classes = SMALL_FPN, SMALL_FC, 80
    conv3x3 = c * c * 9
    box_head = (4 * conv3x3 * 7 * 7 + c * 7 * 7 * fc + fc * (classes + 1) +
                fc * 4 * classes)
    # 4 convs at 14x14, a 2x2 stride-2 deconv (14x14 in) and 1x1 logits at
    # 28x28.
    mask_head = (4 * conv3x3 * 14 * 14 + c * c * 4 * 14 * 14 +
                 c * classes * 28 * 28)
    # Conv/deconv/linear MACs plus the BN of the box heads' shared convs
    # (mmengine counts 2 per element of an eval-mode affine BN).
    box_bn = 4 * 2 * c * 7 * 7
    expected_roi = 3 * 1000 * (box_head + box_bn) + 3 * 100 * mask_head

    result = count_detector_complexity(detector, input_size=(64, 96))
    assert result['flops_by_part']['roi_head'] == expected_roi
    assert result['flops'] == sum(result['flops_by_part'].values())
    assert result['params'] == sum(p.numel() for p in detector.parameters())
    assert result['params'] == sum(result['params_by_part'].values())
    assert result['params_by_part']['backbone'] == sum(
        p.numel() for p in detector.backbone.parameters())
    # The count does not depend on the image content or the proposals'
    # boxes, only on their number.
    wrapper = CascadeDummyForward(detector, num_proposals=10,
                                  num_mask_rois=5).eval()
    with torch.no_grad():
        outs = wrapper(torch.randn(1, 3, 64, 96))
    # rpn outputs, then (cls, bbox) x 3 stages, then masks x 3 stages.
    assert len(outs) == 1 + 2 * 3 + 3
    assert [tuple(o.shape) for o in outs[1:3]] == [(10, classes + 1),
                                                   (10, 4 * classes)]
    assert tuple(outs[-1].shape) == (5, classes, 28, 28)
    assert SMALL_ARCH['channels'] == list(detector.backbone.out_channels)


def test_dummy_forward_needs_a_two_stage_detector():
    cfg = load_det_config(TINY_CONFIG_OF['static'])
    shrink_model_cfg(cfg.model, 'static')
    cfg.model.backbone.init_cfg = None
    detector = _build_detector(cfg.model, cfg.custom_imports)
    detector.rpn_head = None
    with pytest.raises(ValueError, match='has no rpn_head'):
        CascadeDummyForward(detector)

"""Real mmengine Runner runs of the seg configs on a generated ADE20K set.

The configs are the real ones; only sizes, paths and workers shrink (see
``small_seg_config``).
"""
import math

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings
from seg_test_utils import (NUM_CLASSES, SMALL_ARCH, TINY_CONFIG_OF,
                            load_authors_layout_helpers, load_seg_converter,
                            small_seg_config)

WARMUP_START, WARMUP_ITERS, BASE_LR = 1e-6, 1500, 6e-5


def _param_groups_by_name(runner):
    model = runner.model
    group_of = {}
    for group in runner.optim_wrapper.optimizer.param_groups:
        for param in group['params']:
            group_of[id(param)] = group
    return {
        name: group_of[id(param)]
        for name, param in model.named_parameters()
    }


@pytest.mark.parametrize('conv_type', ['static', 'dynamic', 'i_dynamic'])
def test_train_iterations(conv_type, ade20k_fixture, tmp_path):
    data_root, _ = ade20k_fixture
    cfg = small_seg_config(TINY_CONFIG_OF[conv_type], data_root, tmp_path,
                           max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()

    # A single process: the Runner swapped SyncBN for BN.
    assert not any(
        isinstance(m, torch.nn.SyncBatchNorm) for m in runner.model.modules())
    assert runner.model.backbone.conv_type == conv_type
    assert runner.model.backbone.out_channels == SMALL_ARCH['channels']
    assert runner.iter == 2

    hub = runner.message_hub
    loss = hub.get_scalar('train/loss').current()
    decode = hub.get_scalar('train/decode.loss_ce').current()
    aux = hub.get_scalar('train/aux.loss_ce').current()
    assert math.isfinite(loss) and loss > 0
    assert loss == pytest.approx(decode + aux, rel=1e-5)
    # With 150 classes, an untrained head's cross-entropy is near log(150);
    # the auxiliary loss carries weight 0.4.
    assert 0.2 * math.log(NUM_CLASSES) < aux < 0.6 * math.log(NUM_CLASSES)

    # The second iteration ran at the first step of the linear warm-up.
    lr = hub.get_scalar('train/lr').current()
    expected = BASE_LR * (WARMUP_START +
                          (1 - WARMUP_START) / WARMUP_ITERS)
    assert lr == pytest.approx(expected, rel=1e-3)

    groups = _param_groups_by_name(runner)
    # The authors' rule: only the stem, merging and output norms are exempt;
    # the blocks' and the heads' BNs keep weight decay.
    no_decay = ['backbone.norm0.weight', 'backbone.patch_embed.norm.bias']
    decay = ['backbone.stages.0.blocks.0.mlp.fc1.weight',
             'backbone.stages.0.blocks.0.mixer.pointwise_in.bn.weight',
             'decode_head.fpn_bottleneck.bn.weight',
             'decode_head.conv_seg.weight',
             'auxiliary_head.convs.0.conv.weight']
    for name in no_decay:
        assert groups[name]['weight_decay'] == 0, name
    for name in decay:
        assert groups[name]['weight_decay'] == pytest.approx(0.01), name
    # AdamW stepped twice, on backbone and heads.
    optimizer = runner.optim_wrapper.optimizer
    for name in ('backbone.stages.3.blocks.0.mlp.fc2.weight',
                 'decode_head.conv_seg.weight'):
        param = dict(runner.model.named_parameters())[name]
        state = optimizer.state[param]
        assert int(state['step']) == 2
        assert state['exp_avg'].abs().sum() > 0


def _expected_constant_prediction_metrics(labels, class_index):
    """mIoU/aAcc of predicting ``class_index`` everywhere, by hand.

    reduce_zero_label: 0 is ignored, label l in 1..150 is class l - 1.
    """
    gt = np.concatenate([label.ravel() for label in labels])
    valid = gt != 0
    classes = gt[valid].astype(np.int64) - 1
    hit = np.count_nonzero(classes == class_index)
    present = set(np.unique(classes).tolist()) | {class_index}
    # Every present class but the predicted one has IoU 0.
    iou = hit / np.count_nonzero(valid)
    return dict(mIoU=100 * iou / len(present), aAcc=100 * iou)


def _constant_authors_checkpoint(model_cfg, custom_imports, class_index,
                                 path):
    """An mmseg 0.x UPerNet checkpoint in the authors' layout whose decode
    head predicts ``class_index`` everywhere."""
    authors_shapes, make_state_dict = load_authors_layout_helpers()
    import_modules_from_strings(**custom_imports)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    segmentor = MODELS.build(model_cfg)
    state_dict = {
        k: v
        for k, v in segmentor.state_dict().items()
        if not k.startswith('backbone.')
    }
    state_dict['decode_head.conv_seg.weight'].zero_()
    bias = torch.zeros(NUM_CLASSES)
    bias[class_index] = 1.
    state_dict['decode_head.conv_seg.bias'] = bias
    backbone = make_state_dict(
        authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'],
                       dense=True))
    state_dict.update({f'backbone.{k}': v for k, v in backbone.items()})
    torch.save(
        dict(
            state_dict=state_dict,
            meta=dict(CLASSES=[f'c{i}' for i in range(NUM_CLASSES)],
                      PALETTE=[[i, i, i] for i in range(NUM_CLASSES)],
                      iter=160000)), path)


@pytest.mark.parametrize('tta', [False, True], ids=['single_scale', 'tta'])
def test_authors_checkpoint_mIoU_on_fixture(tta, ade20k_fixture, tmp_path):
    """Convert an authors' checkpoint, test it, compare the mIoU by hand."""
    data_root, labels = ade20k_fixture
    class_index = 1  # label 2 of the annotations
    cfg = small_seg_config(TINY_CONFIG_OF['static'], data_root, tmp_path)
    src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
    _constant_authors_checkpoint(cfg.model, cfg.custom_imports, class_index,
                                 src)
    load_seg_converter().main([str(src), str(dst)])
    cfg.load_from = str(dst)
    if tta:  # What `tools/test.py --tta` does, as mmseg's own test script.
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    expected = _expected_constant_prediction_metrics(labels['validation'],
                                                     class_index)
    assert 0 < expected['mIoU'] < expected['aAcc'] < 100
    # IoUMetric rounds to two decimals.
    assert metrics['mIoU'] == pytest.approx(expected['mIoU'], abs=0.006)
    assert metrics['aAcc'] == pytest.approx(expected['aAcc'], abs=0.006)

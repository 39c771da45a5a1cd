"""Real mmengine Runner runs of the det configs on a generated COCO set.

The configs are the real ones; only sizes, paths, workers and (on CPU)
mixed precision change (see ``small_det_config``).
"""
import math

import pytest
import torch
from det_test_utils import (SMALL_ARCH, SMALL_I_DYNAMIC_GROUPS,
                            TINY_CONFIG_OF, load_authors_layout_helpers,
                            load_det_converter, make_authors_det_checkpoint,
                            small_det_config)
from mmengine.hooks import Hook
from mmengine.runner import Runner

BASE_LR, WARMUP_RATIO, WARMUP_ITERS = 1e-4, 0.001, 500
NUM_CLASSES = 80


class SnapshotHook(Hook):
    """Copies some parameters when training starts (after weight init)."""

    def __init__(self, names):
        self.names = names
        self.before = {}

    def before_train(self, runner):
        params = dict(runner.model.named_parameters())
        self.before = {n: params[n].detach().clone() for n in self.names}


def _param_groups_by_name(runner):
    group_of = {}
    for group in runner.optim_wrapper.optimizer.param_groups:
        for param in group['params']:
            group_of[id(param)] = group
    return {
        name: group_of[id(param)]
        for name, param in runner.model.named_parameters()
    }


def _authors_cls_checkpoint(conv_type, path):
    """An authors' ImageNet checkpoint of the shrunken backbone."""
    authors_shapes, make_state_dict = load_authors_layout_helpers()
    state_dict = make_state_dict(
        authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'],
                       conv_type, groups=SMALL_I_DYNAMIC_GROUPS))
    torch.save({'model': state_dict}, path)
    return state_dict


@pytest.mark.parametrize('conv_type', ['static', 'dynamic', 'i_dynamic'])
def test_train_iterations(conv_type, coco_fixture, tmp_path):
    data_root, _ = coco_fixture
    cls_ckpt = tmp_path / 'authors_cls.pth'
    cls_state = _authors_cls_checkpoint(conv_type, cls_ckpt)
    cfg = small_det_config(TINY_CONFIG_OF[conv_type], data_root,
                           tmp_path / 'work', pretrained=str(cls_ckpt))
    # The last epoch's validation is not under test here.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    watched = ['backbone.stages.3.blocks.0.mlp.fc2.weight',
               'roi_head.bbox_head.2.fc_cls.weight']
    snapshot = SnapshotHook(watched)
    runner.register_hook(snapshot, priority='LOWEST')
    runner.train()

    # The backbone started from the authors' ImageNet weights.
    torch.testing.assert_close(snapshot.before[watched[0]],
                               cls_state['layers.3.blocks.0.mlp.fc2.weight'])
    # A single process: the Runner swapped SyncBN for BN.
    assert not any(
        isinstance(m, torch.nn.SyncBatchNorm) for m in runner.model.modules())
    assert runner.model.backbone.conv_type == conv_type
    # 4 training images, 2 per batch, one epoch.
    assert runner.iter == 2

    hub = runner.message_hub
    losses = {
        k[len('train/'):]: v.current()
        for k, v in hub.log_scalars.items()
        if k.startswith('train/') and 'loss' in k
    }
    expected = {'loss', 'loss_rpn_cls', 'loss_rpn_bbox'} | {
        f's{s}.loss_{n}'
        for s in range(3) for n in ('cls', 'bbox', 'mask')
    }
    assert set(losses) == expected
    for name, value in losses.items():
        assert math.isfinite(value) and value >= 0, name
    assert losses['loss'] == pytest.approx(
        sum(v for k, v in losses.items() if k != 'loss'), rel=1e-4)
    # An untrained classifier's cross-entropy is near log(81) at stage 0,
    # weighted 1, 0.5 and 0.25 over the three stages.
    for stage, weight in enumerate((1, 0.5, 0.25)):
        assert losses[f's{stage}.loss_cls'] == pytest.approx(
            weight * math.log(NUM_CLASSES + 1), rel=0.1)

    # The second iteration ran at the first step of the authors' linear
    # warm-up: lr * (ratio + (1 - ratio) * i / 500) at i = 1.
    lr = hub.get_scalar('train/lr').current()
    expected_lr = BASE_LR * (WARMUP_RATIO +
                             (1 - WARMUP_RATIO) / WARMUP_ITERS)
    assert lr == pytest.approx(expected_lr, rel=1e-3)

    groups = _param_groups_by_name(runner)
    # The authors' rule: only the stem, merging and output norms are exempt;
    # the blocks' and the heads' BNs keep weight decay.
    no_decay = ['backbone.norm0.weight', 'backbone.patch_embed.norm.bias']
    decay = ['backbone.stages.0.blocks.0.mlp.fc1.weight',
             'backbone.stages.0.blocks.0.mixer.pointwise_in.bn.weight',
             'roi_head.bbox_head.0.shared_convs.0.bn.weight',
             'neck.fpn_convs.0.conv.weight',
             'roi_head.bbox_head.1.shared_fcs.0.weight',
             'roi_head.mask_head.2.conv_logits.weight']
    for name in no_decay:
        assert groups[name]['weight_decay'] == 0, name
    for name in decay:
        assert groups[name]['weight_decay'] == pytest.approx(0.05), name
    # AdamW stepped twice, on backbone and heads.
    params = dict(runner.model.named_parameters())
    optimizer = runner.optim_wrapper.optimizer
    for name in watched:
        state = optimizer.state[params[name]]
        assert int(state['step']) == 2
        assert not torch.equal(params[name].detach(), snapshot.before[name])


class PredictionHook(Hook):
    """Keeps the test loop's predictions."""

    def __init__(self):
        self.predictions = []

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None):
        self.predictions += [o.pred_instances.cpu() for o in outputs]


def _test_run(cfg):
    runner = Runner.from_cfg(cfg)
    hook = PredictionHook()
    runner.register_hook(hook)
    return runner, runner.test(), hook.predictions


def test_converted_authors_checkpoint_evaluates(coco_fixture, tmp_path):
    """Convert an authors' mmdet 2.x checkpoint, then test it with COCO bbox
    and segm evaluation, as ``tools/test.py CONFIG CKPT`` does. The same
    test run of the reference backbone (tests/reference) on the unconverted
    file must give the same predictions and metrics."""
    from reference.backbone import reference_backbone_cfg

    data_root, annotations = coco_fixture
    src, dst = tmp_path / 'authors_det.pth', tmp_path / 'converted.pth'
    state = make_authors_det_checkpoint(src)
    load_det_converter().main([str(src), str(dst)])
    cfg = small_det_config(TINY_CONFIG_OF['static'], data_root,
                           tmp_path / 'work')
    cfg.load_from = str(dst)
    runner, metrics, predictions = _test_run(cfg)

    # The converted weights were loaded.
    torch.testing.assert_close(
        runner.model.backbone.stages[2].blocks[0].mixer.depthwise.conv.weight,
        state['backbone.layers.2.blocks.0.attn2conv.conv.weight'])
    torch.testing.assert_close(runner.model.roi_head.bbox_head[1].fc_reg.bias,
                               state['roi_head.bbox_head.1.fc_reg.bias'])
    num_val = len(annotations['val']['images'])
    assert len(runner.test_loop.dataloader.dataset) == num_val

    ref_cfg = small_det_config(TINY_CONFIG_OF['static'], data_root,
                               tmp_path / 'ref_work')
    ref_cfg.model.backbone = reference_backbone_cfg(ref_cfg.model.backbone)
    ref_cfg.load_from = str(src)
    ref_runner, ref_metrics, ref_predictions = _test_run(ref_cfg)
    loaded = ref_runner.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items()
               if not k.endswith('num_batches_tracked'))

    assert len(predictions) == len(ref_predictions) == num_val
    for found, wanted in zip(predictions, ref_predictions):
        # The untrained heads score every class near 1/81: compare the
        # confident half, whose order no rounding can change.
        keep = wanted.scores >= wanted.scores.median()
        assert len(found) == len(wanted) > 0
        torch.testing.assert_close(found.scores[keep], wanted.scores[keep],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(found.bboxes[keep], wanted.bboxes[keep],
                                   rtol=1e-4, atol=1e-3)
        assert torch.equal(found.labels[keep], wanted.labels[keep])
    for kind in ('bbox', 'segm'):
        for suffix in ('', '_50', '_75', '_m'):
            key = f'coco/{kind}_mAP{suffix}'
            assert abs(metrics[key] - ref_metrics[key]) <= 0.002, key
    # The fixture has no small (< 32^2) or large (> 96^2) objects; COCO
    # marks such empty area ranges with -1.
    assert metrics['coco/bbox_mAP_s'] == -1
    assert metrics['coco/segm_mAP_l'] == -1


def test_coco_fixture_reads_back(coco_fixture):
    """The fixture's masks decode to what was drawn (pycocotools), and
    mmdet's CocoDataset marks the crowd region as ignored."""
    from mmdet.datasets import CocoDataset
    from pycocotools.coco import COCO
    data_root, annotations = coco_fixture
    coco = COCO(str(data_root / 'annotations' / 'instances_val.json'))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    kinds = [(type(a['segmentation']).__name__, a['iscrowd']) for a in anns]
    assert kinds == [('list', 0), ('dict', 0), ('dict', 0), ('dict', 1)]
    assert isinstance(anns[1]['segmentation']['counts'], str)  # compressed
    assert isinstance(anns[2]['segmentation']['counts'], list)
    for ann in anns:
        mask = coco.annToMask(ann)
        assert mask.sum() == ann['area']
        x, y, w, h = ann['bbox']
        ys, xs = mask.nonzero()
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (
            x, y, x + w, y + h)

    dataset = CocoDataset(
        data_root=str(data_root),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=[])
    assert len(dataset) == len(annotations['val']['images'])
    instances = dataset.get_data_info(0)['instances']
    assert [i['ignore_flag'] for i in instances] == [0, 0, 0, 1]
    assert [i['bbox_label'] for i in instances] == [0, 2, 16, 0]

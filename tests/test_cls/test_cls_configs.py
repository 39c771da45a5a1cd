"""Every classification config parses, builds its model and pipelines."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from cls_data import CLS_CONFIG_DIR

# name: (arch, conv_type, kernel, drop path, head in_channels, optim wrapper,
#        batch per GPU, train/test size, paper params in M (None: not given))
EXPECTED = {
    'dwnet-tiny_8xb128_in1k.py':
    ('tiny', 'static', 7, 0.2, 768, 'AmpOptimWrapper', 128, 224, 24),
    'dynamic-dwnet-tiny_8xb128_in1k.py':
    ('tiny', 'dynamic', 7, 0.2, 768, 'AmpOptimWrapper', 128, 224, 51),
    'i-dynamic-dwnet-tiny_8xb128_in1k.py':
    ('tiny', 'i_dynamic', 7, 0.2, 768, 'MicroBatchClipOptimWrapper', 64, 224,
     26),
    'dwnet-base_16xb64_in1k.py':
    ('base', 'static', 7, 0.5, 1024, 'OptimWrapper', 64, 224, 74),
    'dynamic-dwnet-base_16xb64_in1k.py':
    ('base', 'dynamic', 7, 0.5, 1024, 'OptimWrapper', 64, 224, 162),
    'i-dynamic-dwnet-base_16xb64_in1k.py':
    ('base', 'i_dynamic', 7, 0.5, 1024, 'OptimWrapper', 64, 224, 80),
    'dwnet-tiny_in1k-pre_8xb128_in1k-384px.py':
    ('tiny', 'static', 7, 0.1, 768, 'AmpOptimWrapper', 128, 384, 24),
    'dwnet-tiny-k12_in1k-pre_8xb128_in1k-384px.py':
    ('tiny', 'static', 12, 0.1, 768, 'AmpOptimWrapper', 128, 384, None),
    'dwnet-base_in1k-pre_16xb64_in1k-384px.py':
    ('base', 'static', 7, 0.1, 1024, 'OptimWrapper', 64, 384, 74),
    'dwnet-base-k12_in1k-pre_16xb64_in1k-384px.py':
    ('base', 'static', 12, 0.1, 1024, 'OptimWrapper', 64, 384, None),
}
# The paper's configs; the demo ones (demo_*.py) are tests/test_demo's.
CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(CLS_CONFIG_DIR, '*.py'))
    if not osp.basename(p).startswith('demo_'))


def _load(name):
    return Config.fromfile(osp.join(CLS_CONFIG_DIR, name))


def test_every_config_has_expectations():
    assert CONFIGS == sorted(EXPECTED)


@pytest.mark.parametrize('name', CONFIGS)
def test_recipe(name):
    arch, conv, k, dpr, in_ch, wrapper, batch, size, _ = EXPECTED[name]
    cfg = _load(name)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports.imports == ['dwnet_mm']
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.conv_type,
            backbone.kernel_size, backbone.drop_path_rate) == ('DWNet', arch,
                                                               conv, k, dpr)
    assert cfg.model.neck is None
    head = cfg.model.head
    assert (head.type, head.num_classes, head.in_channels) == (
        'LinearClsHead', 1000, in_ch)
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                             mode='original')
    assert cfg.model.train_cfg.augments == [
        dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]
    assert cfg.model.init_cfg[0] == dict(type='TruncNormal', layer='Linear',
                                         std=.02, bias=0.)

    optim = cfg.optim_wrapper
    assert optim.type == wrapper
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.fused
    assert optim.clip_grad == dict(max_norm=5.0)
    assert optim.paramwise_cfg == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0)
    scheduler, = cfg.param_scheduler
    assert scheduler.type == 'WarmupCosineLR'
    assert (scheduler.warmup_ratio, scheduler.eta_min_ratio) == (1e-3, 1e-2)
    assert scheduler.by_epoch and scheduler.convert_to_iter_based
    assert 'end' not in scheduler  # the run's length
    if size == 224:
        assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (1e-3,
                                                                      0.05)
        assert scheduler.warmup == 20
        assert cfg.train_cfg.max_epochs == 300
        assert 'init_cfg' not in backbone
    else:
        assert (optim.optimizer.lr, optim.optimizer.weight_decay) == (1e-5,
                                                                      1e-8)
        assert scheduler.warmup == 5
        assert cfg.train_cfg.max_epochs == 30
        assert backbone.init_cfg.type == 'Pretrained'
        assert backbone.init_cfg.get('resize_kernels', False) == (k != 7)
        assert head.init_cfg == dict(
            type='Pretrained', prefix='head',
            checkpoint=backbone.init_cfg.checkpoint)
    # 1024 images per update (tests/test_recipes checks the lr scaling).
    accumulation = optim.get('accumulative_counts', 1)
    assert cfg.auto_scale_lr == dict(enable=True,
                                     base_batch_size=1024 // accumulation)
    total = int(name.split('_')[-2].split('xb')[0]) * batch * accumulation
    assert total == 1024 and f'xb{batch * accumulation}_' in name
    assert cfg.train_dataloader.batch_size == batch
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert (evaluator.type, evaluator.topk) == ('Accuracy', (1, 5))


def _run_pipeline(pipeline, img_path):
    from mmpretrain.registry import TRANSFORMS
    results = dict(img_path=str(img_path), gt_label=3)
    for transform in pipeline:
        results = TRANSFORMS.build(transform)(results)
    return results


@pytest.mark.parametrize('name', CONFIGS)
def test_pipelines(name, tmp_path):
    size = EXPECTED[name][7]
    init_default_scope('mmpretrain')
    cfg = _load(name)
    img_path = tmp_path / 'ILSVRC2012_val_00000001.JPEG'
    Image.new('RGB', (300, 260), (120, 30, 200)).save(img_path)
    torch.manual_seed(0)
    names = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandAugment' in names and 'RandomErasing' in names
    for pipeline in (cfg.train_dataloader.dataset.pipeline,
                     cfg.val_dataloader.dataset.pipeline,
                     cfg.test_dataloader.dataset.pipeline):
        packed = _run_pipeline(pipeline, img_path)
        assert packed['inputs'].shape == (3, size, size)
        assert packed['data_samples'].gt_label.tolist() == [3]
        assert packed['data_samples'].img_path == str(img_path)


def _build(name):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(_load(name).model)


@pytest.mark.parametrize('name', CONFIGS)
def test_build_model(name):
    from mmpretrain.models import ImageClassifier

    from dwnet_mm import DWNet
    model = _build(name)
    assert isinstance(model, ImageClassifier)
    assert isinstance(model.backbone, DWNet)
    assert model.head.fc.out_features == 1000
    params = EXPECTED[name][8]
    if params is not None:
        count = sum(p.numel() for p in model.parameters())
        assert round(count / 1e6) == pytest.approx(params, abs=1)


# Even kernels: DWNet's static/dynamic depth-wise conv pads k // 2 on both
# sides, so a 12x12 kernel returns (H + 1) x (W + 1) maps and the residual
# add fails. Strict: remove the mark once the backbone handles even kernels.
@pytest.mark.parametrize(
    'name', [n for n in CONFIGS if EXPECTED[n][0] == 'tiny'])
def test_forward_at_train_resolution(name):
    size = EXPECTED[name][7]
    model = _build(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, size, size), mode='tensor')
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()

"""DWNet builds in every framework's scope, the way users configure it."""
import contextlib
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

import dwnet_mm  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
USER_PROJECT = os.path.join(HERE, '..', 'data', 'user_project')
SMALL = dict(channels=[8, 16, 32, 64], depths=[1, 1, 1, 1])
BACKBONE = dict(arch=SMALL, out_type='featmap', out_indices=(0, 1, 2, 3))


@contextlib.contextmanager
def no_default_scope():
    """As in a fresh process: no DefaultScope (others' tests leave one)."""
    saved = DefaultScope._instance_dict.copy()
    DefaultScope._instance_dict.clear()
    try:
        yield
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(saved)


def _build(scope, type_name):
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        init_default_scope(scope)
        registry = MODELS
        if scope != 'mmengine':
            registry = __import__(f'{scope}.registry',
                                  fromlist=['MODELS']).MODELS
        return registry.build(dict(type=type_name, **BACKBONE))


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_builds_in_each_scope(scope):
    model = _build(scope, 'DWNet').eval()
    assert type(model).__name__ == 'DWNet'
    assert len(model(torch.randn(1, 3, 32, 32))) == 4


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_mmpretrain_prefixed_type(scope):
    assert type(_build(scope, 'mmpretrain.DWNet')).__name__ == 'DWNet'


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain', None])
def test_defaults_do_not_follow_scope(scope):
    """out_type/out_indices left out: every stage's map, whatever
    mmengine's process-wide DefaultScope is."""
    from mmengine.registry import MODELS
    with no_default_scope(), DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(dict(type='DWNet', arch=SMALL)).eval()
    assert model.out_type == 'featmap' and model.out_indices == (0, 1, 2, 3)
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [
        (c, 32 // s, 32 // s) for c, s in zip(SMALL['channels'],
                                              (4, 8, 16, 32))]


def test_explicit_options_win():
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = dwnet_mm.DWNet(arch=SMALL, out_type='featmap',
                               out_indices=(1, 3))
    assert model.out_indices == (1, 3)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = dwnet_mm.DWNet(arch=SMALL, out_type='avg_featmap',
                               out_indices=-1)
    assert model.out_indices == (3, )
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 64)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_pooled_outputs_in_dense_scope_warn(scope):
    with DefaultScope.overwrite_default_scope(scope), \
            pytest.warns(UserWarning) as record:
        model = dwnet_mm.DWNet(arch=SMALL, out_type='avg_featmap')
    message = ' '.join(str(w.message) for w in record)
    assert "'featmap'" in message and '(0, 1, 2, 3)' in message
    assert model.out_type == 'avg_featmap'


def test_user_detector_config():
    """Built as a user would, with mmdet's registry and no scope set: the
    config inherited from an ``mmdet::`` base carries ``_scope_='mmdet'``,
    so DWNet returns FPN's four maps without out_type/out_indices."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(
        os.path.join(USER_PROJECT, 'mask_rcnn_dwnet_tiny.py'))
    assert cfg.model.backbone.type == 'DWNet'
    assert 'out_type' not in cfg.model.backbone
    with no_default_scope():
        detector = MODELS.build(cfg.model)
    detector.init_weights()
    detector.eval()
    feats = detector.extract_feat(torch.randn(1, 3, 96, 128))
    assert [f.shape[1] for f in feats] == [256] * 5
    assert type(detector.backbone).__name__ == 'DWNet'


def test_user_segmentor_config():
    from mmseg.registry import MODELS
    cfg = Config.fromfile(os.path.join(USER_PROJECT, 'upernet_dwnet_tiny.py'))
    with no_default_scope():
        segmentor = MODELS.build(cfg.model)
    segmentor.init_weights()
    segmentor.eval()
    out = segmentor(torch.randn(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, 150, 16, 16)
    assert isinstance(segmentor.backbone.norm0, torch.nn.SyncBatchNorm)


def test_user_classifier_config():
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(
        os.path.join(USER_PROJECT, 'swin_to_dwnet_tiny_in1k.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(cfg.model)
    classifier.init_weights()
    classifier.eval()
    scores = classifier(torch.randn(2, 3, 64, 64), mode='tensor')
    assert scores.shape == (2, 1000)


def test_import_without_frameworks():
    """dwnet_mm imports with no framework; framework helpers name the extra."""
    code = (
        'import sys\n'
        'for name in ("mmpretrain", "mmdet", "mmseg"):\n'
        '    sys.modules[name] = None  # as if not installed\n'
        'import dwnet_mm, torch\n'
        'm = dwnet_mm.DWNet(arch="tiny").eval()\n'
        'assert m(torch.randn(1, 3, 32, 32))[-1].shape == (1, 768, 1, 1)\n'
        'from dwnet_mm.utils import require_framework\n'
        'try:\n'
        '    require_framework("mmdet", "the detection configs")\n'
        'except ImportError as e:\n'
        '    print(e)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert 'the detection configs needs mmdet' in out
    assert "pip install 'dwnet-mm[det]'" in out

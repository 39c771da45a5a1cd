"""Every conv type, in the training and the deploy form, with the native
kernels on and off, runs under ``torch.inference_mode()`` with the outputs
of ``torch.no_grad()``; so does a model built, loaded and switched to
deploy inside ``inference_mode``, and a detector and a segmentor built and
run inside it (issue 37: the deploy form read ``weight._version`` for a
packing cache, which inference tensors do not have)."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from reference.weights import randomize_

from dwnet_mm.models import DWNet
from dwnet_mm.ops import set_native

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
# 8 I-Dynamic groups: the native kernels take them (multiples of 8).
KWARGS = dict(arch=dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1]),
              i_dynamic_groups=8, out_type='featmap', out_indices=(0, 1, 2, 3))
CONV_TYPES = ['static', 'dynamic', 'i_dynamic']


def build(conv_type, form):
    model = randomize_(DWNet(conv_type=conv_type, **KWARGS), seed=3).eval()
    return model.switch_to_deploy() if form == 'deploy' else model


def image(batch=2, height=61, width=75):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, height, width, generator=generator)


def assert_same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.is_contiguous()
        torch.testing.assert_close(a.clone(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('native', [True, False])
@pytest.mark.parametrize('form', ['training', 'deploy'])
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_inference_mode_equals_no_grad(conv_type, form, native):
    set_native(native)
    model, x = build(conv_type, form), image()
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        got = model(x)
        # Twice: nothing the first call leaves behind breaks the second.
        again = model(x)
    assert_same(got, expected)
    assert_same(again, expected)
    if form == 'training':
        return
    # Built, loaded (a training-form state dict, folded on loading) and
    # switched to deploy inside inference_mode.
    trained = build(conv_type, 'training')
    with torch.inference_mode():
        inside = DWNet(conv_type=conv_type, **KWARGS).eval()
        inside.load_state_dict(trained.state_dict())
        inside.switch_to_deploy()
        assert_same(inside(x), expected)
        built_deployed = DWNet(conv_type=conv_type, deploy=True,
                               **KWARGS).eval()
        built_deployed.load_state_dict(trained.state_dict())
        assert_same(built_deployed(x), expected)


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_in_inference_mode(config, scope, shrink, conv_type):
    pytest.importorskip({'mmdet': 'mmdet', 'mmseg': 'mmseg'}[scope])
    init_default_scope(scope)
    cfg = Config.fromfile(osp.join(osp.dirname(TESTS), 'configs', config))
    shrink(cfg.model, conv_type)
    cfg.model.backbone.init_cfg = None
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with torch.inference_mode():
        model = revert_sync_batchnorm(registry.build(cfg.model))
        randomize_(model, seed=1)
        model.eval()
        model.backbone.switch_to_deploy()
    return model


@pytest.mark.parametrize('conv_type', ['i_dynamic'])
def test_detector_built_and_run_in_inference_mode(conv_type):
    from mmdet.structures import DetDataSample
    utils = _load(osp.join(TESTS, 'test_det', 'det_test_utils.py'),
                  '_det_test_utils')
    model = _build_in_inference_mode('det/cascade_i_dynamic_dwnet_tiny_3x.py',
                                     'mmdet', utils.shrink_model_cfg,
                                     conv_type)
    x = image(1, 96, 128)
    sample = DetDataSample(metainfo=dict(
        img_shape=(96, 128), ori_shape=(96, 128), scale_factor=(1., 1.),
        batch_input_shape=(96, 128), pad_shape=(96, 128)))
    with torch.no_grad():
        expected = model.predict(x, [sample])[0].pred_instances
    with torch.inference_mode():
        got = model.predict(x, [sample])[0].pred_instances
    assert len(expected) > 0
    torch.testing.assert_close(got.bboxes.clone(), expected.bboxes)
    torch.testing.assert_close(got.scores.clone(), expected.scores)


@pytest.mark.parametrize('conv_type', ['i_dynamic'])
def test_segmentor_built_and_run_in_inference_mode(conv_type):
    from mmseg.structures import SegDataSample
    utils = _load(osp.join(TESTS, 'test_seg', 'seg_test_utils.py'),
                  '_seg_test_utils')
    model = _build_in_inference_mode(
        'seg/upernet_i_dynamic_dwnet_tiny_160k_ade20k.py', 'mmseg',
        utils.shrink_model_cfg, conv_type)
    x = image(1, 64, 96)
    meta = dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96),
                padding_size=[0, 0, 0, 0])
    with torch.no_grad():
        expected = model.predict(x, [SegDataSample(metainfo=meta)])[0]
    with torch.inference_mode():
        got = model.predict(x, [SegDataSample(metainfo=meta)])[0]
    torch.testing.assert_close(got.seg_logits.data.clone(),
                               expected.seg_logits.data)

"""ONNX export of every DWNet variant, checked in ONNX Runtime.

Each conv_type, in the training form (eval) and the deploy form, is
exported once with dynamic batch/height/width and run at two batch sizes
and two image sizes (one odd) from that one file. BatchNorm statistics are
random: the default ones (mean 0, var 1) would hide a wrong fold.
"""
from copy import deepcopy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from dwnet_mm.export import (SlicedAdaptiveAvgPool2d, export_onnx,
                             max_relative_error, nonstandard_ops,
                             onnxruntime_session, run_onnxruntime)
from dwnet_mm.models import DWNet
from dwnet_mm.ops import depthwise_conv_taps, onnx_exporting

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

SMALL = dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1])
CONV_TYPES = ('static', 'dynamic', 'i_dynamic')
FORMS = ('training', 'deploy')
# (batch, height, width) runs of one exported file (traced at 2x96x128):
# two other batch sizes, two other sizes, one of them odd (padding in the
# stem, the patch merging and the pad-to-window of the blocks).
RUNS = ((1, 64, 96), (3, 64, 96), (2, 250, 330))
REL_TOL = 1e-4


def randomize_norms(model, seed=0):
    """Random BN statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


def build(conv_type, arch=SMALL, groups=8, pad_to_window=True, seed=0):
    """A training-form DWNet (eval) with dense outputs of every stage."""
    torch.manual_seed(seed)
    model = DWNet(arch=deepcopy(arch), conv_type=conv_type,
                  i_dynamic_groups=groups, out_type='featmap',
                  out_indices=(0, 1, 2, 3), pad_to_window=pad_to_window)
    return randomize_norms(model, seed).eval()


def images(batch, height, width, seed=1):
    return torch.randn(batch, 3, height, width,
                       generator=torch.Generator().manual_seed(seed))


def pytorch_outputs(model, x):
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``exported(conv_type, form, opset)``: (training model, exported
    model, path), each exported once per module."""
    cache = {}

    def export(conv_type, form, opset=17):
        key = conv_type, form, opset
        if key not in cache:
            training = build(conv_type)
            model = deepcopy(training).switch_to_deploy() \
                if form == 'deploy' else training
            path = str(tmp_path_factory.mktemp('onnx') /
                       f'{conv_type}_{form}_{opset}.onnx')
            export_onnx(model, images(2, 96, 128, seed=5), path, opset)
            cache[key] = training, model, path
        return cache[key]

    return export


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_export_matches_pytorch(exported, conv_type, form):
    """One file, two batch sizes and two sizes, equal to PyTorch; the
    deploy form's graph also equals the training form (eval), which the
    reference tests check against the authors' implementation."""
    training, model, path = exported(conv_type, form)
    assert nonstandard_ops(path) == []
    session = onnxruntime_session(path)
    for batch, height, width in RUNS:
        x = images(batch, height, width)
        outputs = run_onnxruntime(session, x)
        expected = pytorch_outputs(model, x)
        assert max_relative_error(outputs, expected) < REL_TOL, \
            (batch, height, width)
        if form == 'deploy':
            assert max_relative_error(
                outputs, pytorch_outputs(training, x)) < REL_TOL


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_export_opset_11(exported, conv_type, form):
    _, model, path = exported(conv_type, form, opset=11)
    assert nonstandard_ops(path) == []
    x = images(3, 75, 99)
    outputs = run_onnxruntime(onnxruntime_session(path), x)
    assert max_relative_error(outputs, pytorch_outputs(model, x)) < REL_TOL


def test_tiny_arch_i_dynamic_deploy(tmp_path):
    """DWNet-T's widths, depths and 32 I-Dynamic groups, deploy form,
    classification output (pooled last stage)."""
    torch.manual_seed(0)
    training = randomize_norms(DWNet(arch='tiny', conv_type='i_dynamic'))
    training.eval()
    model = deepcopy(training).switch_to_deploy()
    path = str(tmp_path / 'tiny.onnx')
    export_onnx(model, images(1, 64, 64), path, 17)
    session = onnxruntime_session(path)
    x = images(2, 97, 65)
    outputs = run_onnxruntime(session, x)
    assert max_relative_error(outputs, pytorch_outputs(model, x)) < REL_TOL
    assert max_relative_error(outputs, pytorch_outputs(training, x)) < REL_TOL


def test_not_exporting_outside_export():
    assert not onnx_exporting()


@pytest.mark.parametrize('kernel_size', [3, 4, 7])
def test_depthwise_conv_taps_is_a_depthwise_conv(kernel_size):
    """The export form of the per-image conv equals a grouped conv."""
    k = kernel_size
    x = torch.randn(2, 6, 9, 11)
    weight = torch.randn(6, 1, k, k)
    expected = F.conv2d(x, weight, padding=k // 2, groups=6)
    taps = depthwise_conv_taps(
        x.unsqueeze(2), weight.view(1, 6, k * k, 1, 1).expand(2, -1, -1, -1,
                                                              -1), k,
        k // 2, k // 2)
    torch.testing.assert_close(taps.squeeze(2), expected)


@pytest.mark.parametrize('size', [(1, 1), (3, 2), (6, 6), (7, 5)])
def test_sliced_adaptive_pool_matches_pytorch(size):
    x = torch.randn(2, 4, 23, 17)
    torch.testing.assert_close(
        SlicedAdaptiveAvgPool2d(size)(x),
        nn.AdaptiveAvgPool2d(size)(x))

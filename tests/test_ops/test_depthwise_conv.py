"""The native NHWC depth-wise conv kernels (the dynamic conv's: a kernel
per image and channel) against PyTorch's conv2d."""
import platform
import sys
import warnings
from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F

from dwnet_mm.models.layers.depthwise_mixer import DepthwiseConv2d
from dwnet_mm.models.layers.dynamic_conv import DynamicDepthwiseConv2d
import dwnet_mm.ops.depthwise as depthwise_module
import dwnet_mm
import dwnet_mm.ops.backend as backend
from dwnet_mm.ops import (depthwise_conv, dynamic_depthwise_conv, native_ops,
                          set_native)

X86 = platform.machine().lower() in ('x86_64', 'amd64')
needs_native = pytest.mark.skipif(
    not X86, reason='the native kernels are x86-64 only')


def reference(x, weight, bias=None):
    """fp64 conv2d of NHWC ``x``, image by image, with per-image
    (N, C, k, k) kernels."""
    x = x.double().permute(0, 3, 1, 2)
    k = weight.shape[-1]
    bias = None if bias is None else bias.double()
    out = torch.cat([
        F.conv2d(x[n:n + 1], weight[n].double().unsqueeze(1), bias,
                 padding=k // 2, groups=x.shape[1])
        for n in range(x.shape[0])
    ])
    return out.permute(0, 2, 3, 1)


def depthwise_conv_nhwc(x, weight, bias=None, relu=False):
    """The native kernels through the dynamic conv's op, with (N, C, k, k)
    kernels (C a multiple of 8, k of 3, 5, 7, 9)."""
    assert depthwise_module._runs_native(x, weight.shape[-1])
    return dynamic_depthwise_conv(x, weight, bias, relu)


@needs_native
def test_native_kernels_build_here():
    # On x86-64 with a compiler (CI) the fast path must not silently vanish.
    assert native_ops() is not None
    assert depthwise_module._runs_native(torch.zeros(1, 4, 4, 8), 7)


SHAPES = [
    # N, H, W, C, k: wide rows (8-pixel blocks), every tail width, maps
    # smaller than the kernel, a single pixel.
    (2, 9, 19, 16, 7),
    (1, 7, 7, 24, 7),
    (3, 5, 6, 8, 3),
    (1, 13, 11, 32, 5),
    (2, 4, 3, 16, 9),
    (1, 1, 1, 8, 7),
    (2, 2, 13, 8, 7),
]


@needs_native
@pytest.mark.parametrize('N,H,W,C,k', SHAPES)
def test_forward_and_backward_match_conv2d(N, H, W, C, k):
    torch.manual_seed(0)
    x = torch.randn(N, H, W, C, requires_grad=True)
    weight = torch.randn(N, C, k, k, requires_grad=True)
    bias = torch.randn(C, requires_grad=True)
    out = depthwise_conv_nhwc(x, weight, bias)
    ref = reference(x, weight, bias)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)

    grad = torch.randn_like(out)
    out.backward(grad)
    x64, w64, b64 = (t.detach().double().requires_grad_()
                     for t in (x, weight, bias))
    reference(x64, w64, b64).backward(grad.double())
    for got, want in ((x.grad, x64.grad), (weight.grad, w64.grad),
                      (bias.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


@needs_native
def test_relu_and_no_bias_in_inference():
    torch.manual_seed(1)
    x, weight = torch.randn(2, 10, 12, 16), torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        out = depthwise_conv_nhwc(x, weight, relu=True)
    torch.testing.assert_close(out.double(), reference(x, weight).relu(),
                               rtol=1e-5, atol=1e-5)
    # With autograd the ReLU is a separate, differentiable op.
    w = weight.clone().requires_grad_()
    out = depthwise_conv_nhwc(x, w, relu=True)
    assert out.grad_fn is not None and (out >= 0).all()


@needs_native
def test_weight_gradient_of_a_large_map_stays_accurate():
    # Summed over 80 * 80 pixels: per-row partial sums keep fp32 close.
    torch.manual_seed(2)
    x = torch.randn(1, 80, 80, 16)
    weight = torch.randn(1, 16, 7, 7, requires_grad=True)
    grad = torch.randn(1, 80, 80, 16)
    depthwise_conv_nhwc(x, weight).backward(grad)
    w64 = weight.detach().double().requires_grad_()
    reference(x, w64).backward(grad.double())
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-5,
                               atol=1e-4)


@needs_native
@pytest.mark.parametrize('channels_last', [True, False])
def test_depthwise_module_equals_shifted_sums(channels_last):
    torch.manual_seed(3)
    conv = DepthwiseConv2d(16, 7)
    x = torch.randn(2, 16, 9, 11)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = conv(x)
    assert out.shape == x.shape
    out.sum().backward()
    grads = x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()

    # The reference: the sum of the 49 shifted products, in fp64.
    x64 = x.detach().double().requires_grad_()
    w64 = conv.weight.detach().double().requires_grad_()
    b64 = conv.bias.detach().double().requires_grad_()
    padded = torch.nn.functional.pad(x64, (3, 3, 3, 3))
    ref = b64.view(1, -1, 1, 1) + sum(
        padded[:, :, dy:dy + 9, dx:dx + 11] * w64[:, 0, dy, dx].view(
            1, -1, 1, 1) for dy in range(7) for dx in range(7))
    ref.sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, (x64.grad, w64.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


@needs_native
def test_dynamic_conv_native_equals_pytorch(monkeypatch):
    # The reference is the fp64 module on PyTorch ops: two fp32 sums of the
    # parameter gradients may differ by more than 1e-4 from each other.
    torch.manual_seed(4)
    conv = DynamicDepthwiseConv2d(16, 7)
    x = torch.randn(3, 16, 8, 10).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    out = conv(x)
    out.square().sum().backward()
    grads = [x.grad] + [p.grad for p in conv.parameters()]
    set_native(False)
    conv64 = deepcopy(conv).double()
    x64 = x.detach().double().requires_grad_()
    ref = conv64(x64)
    ref.square().sum().backward()
    refs = [x64.grad] + [p.grad for p in conv64.parameters()]
    for got, want in zip([out] + grads, [ref] + refs):
        error = (got.double() - want).norm() / want.norm()
        assert error < 1e-5, error  # PyTorch fp32 ops: up to 1.6e-6


def test_unsupported_inputs_use_pytorch():
    x = torch.zeros(1, 4, 4, 12)  # C not a multiple of 8
    supported = depthwise_module._runs_native
    assert not supported(x, 7)
    assert not supported(torch.zeros(1, 4, 4, 8), 4)
    assert not supported(torch.zeros(1, 4, 4, 8, dtype=torch.float64), 7)
    conv = DepthwiseConv2d(12, 7)
    x = torch.randn(1, 12, 5, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        conv(x), F.conv2d(x, conv.weight, conv.bias, padding=3, groups=12))


def test_tracing_uses_aten_ops():
    # FLOP counters and exporters trace: they must see the aten conv.
    conv = DepthwiseConv2d(8, 7).eval()
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    traced = torch.jit.trace(conv, x)
    assert 'aten::_convolution' in str(traced.graph)
    torch.testing.assert_close(traced(x), conv(x), rtol=1e-5, atol=1e-5)


def test_missing_kernels_warn_once_and_name_the_fix(monkeypatch):
    # An install whose compile failed has no dwnet_mm._ext.
    monkeypatch.setitem(sys.modules, 'dwnet_mm._ext', None)
    monkeypatch.delattr(dwnet_mm, '_ext', raising=False)
    load = backend._load_native
    load.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert native_ops() is None and native_ops() is None
        texts = [str(w.message) for w in caught]
        assert len(texts) == 1, texts
        assert 'run on PyTorch ops' in texts[0]
        assert 'pip install --no-build-isolation -e .' in texts[0]
        x = torch.randn(1, 5, 5, 8)
        weight = torch.randn(8, 1, 3, 3)
        torch.testing.assert_close(
            depthwise_conv(x, weight),
            F.conv2d(x.permute(0, 3, 1, 2), weight, padding=1,
                     groups=8).permute(0, 2, 3, 1))
    finally:
        load.cache_clear()

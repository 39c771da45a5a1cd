"""The native many-row linear kernels (``linear_into``, ``matmul_into``,
``rows_linear``) against fp64 PyTorch."""
import platform

import pytest
import torch
import torch.nn.functional as F

import dwnet_mm.ops.gemm as linear_module
from dwnet_mm.models.layers.depthwise_mixer import DepthwiseMixer
from dwnet_mm.ops import (linear_into, matmul_into, native_linear_supported,
                          native_ops, rows_linear)
from dwnet_mm.ops.gemm import MIN_PACKED_ROWS, packed_linear_weight
# Test files are on sys.path (pytest's default import mode).
from test_small_batch_linear import graph_node_names, relative_error

X86 = platform.machine().lower() in ('x86_64', 'amd64')
needs_native = pytest.mark.skipif(
    not X86, reason='the native kernels are x86-64 only')

SHAPES = [
    # rows, in, out: rows that are not a multiple of either tile height
    # (12 and 6) nor of the 192-row block, an inner size past the 384 of
    # one pass, widths of 16-wide panels only (48, 16: the AVX2 tiles) and
    # of 32-wide ones (96, 64: AVX-512 where the CPU has it).
    (197, 96, 96),
    (13, 400, 48),
    (1, 7, 16),
    (5, 1, 64),
    (390, 800, 32),
    # rows 4 KiB apart: packed before the micro-kernel reads them
    (29, 1024, 64),
]


@needs_native
@pytest.mark.parametrize('rows,in_features,out_features', SHAPES)
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('relu,accumulate', [(False, False), (True, False),
                                             (False, True), (True, True)])
def test_linear_into_matches_fp64(rows, in_features, out_features, bias, relu,
                                  accumulate):
    torch.manual_seed(0)
    x = torch.randn(rows, in_features)
    weight = torch.randn(out_features, in_features)
    b = torch.randn(out_features) if bias else None
    out = torch.randn(rows, out_features)
    expected = x.double() @ weight.double().t()
    if b is not None:
        expected += b.double()
    if accumulate:
        expected += out.double()
    if relu:
        expected = expected.relu()
    assert native_linear_supported(x, weight, b)
    result = linear_into(out, x, weight, b, relu=relu, accumulate=accumulate)
    assert result is out
    assert relative_error(out, expected) < 1e-6


@needs_native
@pytest.mark.parametrize('rows,inner,width', [(197, 96, 96), (1000, 40, 48),
                                              (13, 400, 64), (1024, 20, 32),
                                              (30, 2048, 16)])
@pytest.mark.parametrize('transposed', [False, True])
@pytest.mark.parametrize('accumulate', [False, True])
def test_matmul_into_matches_fp64(rows, inner, width, transposed,
                                  accumulate):
    """``x @ b`` with ``x`` contiguous or a transposed view (the weight
    gradient ``grad.T @ x``)."""
    torch.manual_seed(0)
    x = torch.randn(inner, rows).t() if transposed else torch.randn(
        rows, inner)
    b = torch.randn(inner, width)
    out = torch.randn(rows, width)
    expected = x.double() @ b.double() + (out.double() if accumulate else 0)
    assert matmul_into(out, x, b, accumulate=accumulate) is out
    assert relative_error(out, expected) < 1e-6


@needs_native
def test_packed_weight_cache_follows_in_place_updates():
    torch.manual_seed(0)
    x = torch.randn(50, 32)
    weight = torch.randn(64, 32)
    out = torch.empty(50, 64)
    linear_into(out, x, weight)
    assert packed_linear_weight(weight) is packed_linear_weight(weight)
    weight.mul_(-2)  # a new version: packed again
    linear_into(out, x, weight)
    assert relative_error(out, x.double() @ weight.double().t()) < 1e-6


@needs_native
@pytest.mark.parametrize('bias', [True, False])
def test_packed_linear_gradients_match_fp64(bias):
    torch.manual_seed(0)
    x = torch.randn(MIN_PACKED_ROWS + 5, 48, requires_grad=True)
    weight = torch.randn(32, 48, requires_grad=True)
    b = torch.randn(32, requires_grad=True) if bias else None
    out = rows_linear(x, weight, b)
    assert 'PackedLinearBackward' in graph_node_names(out.grad_fn)
    grad = torch.randn_like(out)
    out.backward(grad)

    leaves = [t.detach().double().requires_grad_() for t in (x, weight)]
    b64 = b.detach().double().requires_grad_() if bias else None
    expected = F.linear(*leaves, b64)
    expected.backward(grad.double())
    assert relative_error(out, expected.detach()) < 1e-6
    assert relative_error(x.grad, leaves[0].grad) < 1e-6
    assert relative_error(weight.grad, leaves[1].grad) < 1e-6
    if bias:
        assert relative_error(b.grad, b64.grad) < 1e-6


def test_rows_linear_falls_back_below_the_row_limit():
    """Few rows (stage 4 at small batches) do not pay for packing the weight
    in every call: ``F.linear`` there, with its own autograd node."""
    x = torch.randn(MIN_PACKED_ROWS - 1, 32, requires_grad=True)
    weight = torch.randn(32, 32, requires_grad=True)
    out = rows_linear(x, weight)
    assert 'PackedLinearBackward' not in graph_node_names(out.grad_fn)
    torch.testing.assert_close(out, F.linear(x, weight))


@needs_native
def test_training_form_pointwise_convs_run_packed(monkeypatch):
    """The DW-block's 1x1 convs take the native path in training, and give
    PyTorch's outputs and gradients."""
    torch.manual_seed(0)
    mixer = DepthwiseMixer(32)
    x = torch.randn(1, 32, 40, 40).to(memory_format=torch.channels_last)
    x.requires_grad_()
    out = mixer(x)
    assert 'PackedLinearBackward' in graph_node_names(out.grad_fn)
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    weights = [mixer.pointwise_in.conv.weight, mixer.pointwise_out.conv.weight]
    reference = DepthwiseMixer(32)
    reference.load_state_dict(mixer.state_dict())
    monkeypatch.setattr(linear_module, 'native_linear_supported',
                        lambda *args, **kwargs: False)
    expected = reference(x)
    expected.sum().backward()
    assert all(w.grad is not None for w in weights)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, x.grad, rtol=1e-4, atol=1e-5)


@needs_native
def test_bad_arguments_name_the_fix():
    ops = native_ops()
    with pytest.raises(RuntimeError, match='multiple of 16'):
        ops.pack_linear_weight(torch.randn(20, 8))
    packed = ops.pack_linear_weight(torch.randn(32, 8))
    with pytest.raises(RuntimeError, match=r'x must be \(M, 8\)'):
        ops.packed_linear(torch.randn(4, 9), packed, None,
                          torch.empty(4, 32))
    with pytest.raises(RuntimeError, match=r'out must be \(4, 32\)'):
        ops.packed_linear(torch.randn(4, 8), packed, None,
                          torch.empty(4, 31))
    with pytest.raises(RuntimeError, match='pack_linear_weight'):
        ops.packed_linear(torch.randn(4, 8), torch.randn(2, 8, 8), None,
                          torch.empty(4, 16))
    with pytest.raises(RuntimeError, match='bias must have 32'):
        ops.packed_linear(torch.randn(4, 8), packed, torch.randn(3),
                          torch.empty(4, 32))


def test_pytorch_ops_fallback_without_native():
    """Widths the kernels do not take (not a multiple of 16) run on PyTorch
    ops and give the same result."""
    torch.manual_seed(0)
    x, weight, b = torch.randn(30, 8), torch.randn(20, 8), torch.randn(20)
    assert not native_linear_supported(x, weight, b)
    out = linear_into(torch.empty(30, 20), x, weight, b, relu=True)
    torch.testing.assert_close(out, F.linear(x, weight, b).relu())

"""The native small-batch linear kernels against fp64 ``F.linear``."""
import platform

import pytest
import torch
import torch.nn.functional as F

from dwnet_mm.models.layers.dynamic_conv import DynamicDepthwiseConv2d
from dwnet_mm.ops import native_ops, small_batch_linear
from dwnet_mm.ops.gemm import (MAX_NATIVE_ROWS, SmallBatchLinear,
                               native_small_batch_supported)

X86 = platform.machine().lower() in ('x86_64', 'amd64')
needs_native = pytest.mark.skipif(
    not X86, reason='the native kernels are x86-64 only')

SHAPES = [
    # rows, in, out: every in_features tail (4-register blocks, single
    # registers, scalars), out rows not a multiple of the 16-row tile, one
    # row, the most rows the Python side sends natively.
    (8, 192, 1000),
    (8, 24, 37),
    (3, 44, 16),
    (1, 7, 5),
    (MAX_NATIVE_ROWS, 40, 33),
]


def graph_node_names(grad_fn):
    """Names of every node of an autograd graph."""
    names, stack, seen = set(), [grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def relative_error(actual, expected):
    return ((actual.double() - expected).norm() / expected.norm()).item()


@needs_native
@pytest.mark.parametrize('rows,in_features,out_features', SHAPES)
@pytest.mark.parametrize('bias', [True, False])
def test_forward_and_gradients_match_fp64(rows, in_features, out_features,
                                          bias):
    torch.manual_seed(0)
    x = torch.randn(rows, in_features, requires_grad=True)
    weight = torch.randn(out_features, in_features, requires_grad=True)
    b = torch.randn(out_features, requires_grad=True) if bias else None
    assert native_small_batch_supported(x, weight, b)
    out = SmallBatchLinear.apply(x, weight, b)
    grad = torch.randn_like(out)
    out.backward(grad)

    tensors = [t.detach().double().requires_grad_() for t in (x, weight)]
    b64 = b.detach().double().requires_grad_() if bias else None
    expected = F.linear(*tensors, b64)
    expected.backward(grad.double())
    assert relative_error(out, expected) < 1e-6
    assert relative_error(x.grad, tensors[0].grad) < 1e-6
    assert relative_error(weight.grad, tensors[1].grad) < 1e-6
    if bias:
        assert relative_error(b.grad, b64.grad) < 1e-6


@needs_native
def test_backward_computes_only_the_asked_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 16)
    weight = torch.randn(20, 16, requires_grad=True)
    out = SmallBatchLinear.apply(x, weight, None)
    out.sum().backward()
    assert x.grad is None
    torch.testing.assert_close(weight.grad, x.sum(0).expand(20, 16),
                               rtol=1e-5, atol=1e-5)


def test_falls_back_to_f_linear_beyond_the_native_rows():
    x = torch.randn(MAX_NATIVE_ROWS + 1, 8)
    weight = torch.randn(4, 8)
    assert not native_small_batch_supported(x, weight)
    assert not native_small_batch_supported(x.double(), weight.double())
    assert not native_small_batch_supported(x[0], weight)
    torch.testing.assert_close(small_batch_linear(x, weight),
                               F.linear(x, weight))


@needs_native
def test_kernel_rejects_bad_shapes_with_the_fix():
    ops = native_ops()
    x, weight = torch.randn(2, 8), torch.randn(4, 8)
    with pytest.raises(RuntimeError, match='weight must be'):
        ops.small_batch_linear(x, torch.randn(4, 9))
    with pytest.raises(RuntimeError, match='use F.linear for more'):
        ops.small_batch_linear(torch.randn(65, 8), weight)
    with pytest.raises(RuntimeError, match='grad must be'):
        ops.small_batch_linear_backward(torch.randn(2, 5), x, weight, True,
                                        True, True)


@needs_native
def test_dynamic_conv_kernel_generator_is_unchanged(monkeypatch):
    """The D-DW layer's output and parameter gradients are those of the
    same layer on ``F.linear``."""
    torch.manual_seed(0)
    layer = DynamicDepthwiseConv2d(16, 7)
    x = torch.randn(3, 16, 9, 9, requires_grad=True)

    def run():
        layer.zero_grad()
        x.grad = None
        out = layer(x)
        nodes = graph_node_names(out.grad_fn)
        out.backward(torch.ones_like(out))
        return nodes, [out, x.grad] + [p.grad for p in layer.parameters()]

    nodes, native = run()
    assert 'SmallBatchLinearBackward' in nodes
    monkeypatch.setattr('dwnet_mm.ops.gemm.MAX_NATIVE_ROWS', 0)
    nodes, reference = run()
    assert 'SmallBatchLinearBackward' not in nodes
    for a, b in zip(native, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

"""The native MLP (row chunks, native GELU) and bias + activation kernels
against fp64 PyTorch, and the kernels' threading."""
import platform

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dwnet_mm.ops.gelu_mlp as mlp_ops
from dwnet_mm.models.layers import Mlp
from dwnet_mm.ops import (bias_activation_, fused_mlp, fused_mlp_supported,
                          mlp, native_mlp_supported, native_ops)
from dwnet_mm.ops.gemm import packed_linear_weight
# Test files are on sys.path (pytest's default import mode). A norm-wise
# bound: sums over a thousand rows in fp32 put single elements past an
# elementwise one.
from test_small_batch_linear import relative_error

X86 = platform.machine().lower() in ('x86_64', 'amd64')
needs_native = pytest.mark.skipif(
    not X86, reason='the native kernels are x86-64 only')

# fp32 GELU's own error is 4e-7 (torch's erf); the rational erf adds as much.
GELU_ATOL = 1.5e-6


@needs_native
def test_kernels_run_on_torchs_threads():
    # Compiled without OpenMP, at::parallel_for runs serially: every kernel
    # would use one thread whatever torch.set_num_threads says.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert native_ops().parallel_threads(64) == 2
        torch.set_num_threads(1)
        assert native_ops().parallel_threads(64) == 1
    finally:
        torch.set_num_threads(threads)


@needs_native
@pytest.mark.parametrize('activation', ['none', 'relu', 'gelu'])
@pytest.mark.parametrize('shape', [(3001, 96), (257, 13), (5, ), (70001, )])
@pytest.mark.parametrize('with_bias', [True, False])
def test_bias_activation_in_place(activation, shape, with_bias):
    # Odd widths and lengths: partial vectors, and (without a bias) the
    # flat split's tail.
    torch.manual_seed(0)
    x = torch.randn(*shape) * 3
    bias = torch.randn(shape[-1]) if with_bias else None
    expected = x.double() + (0 if bias is None else bias.double())
    expected = {'none': lambda t: t, 'relu': F.relu,
                'gelu': F.gelu}[activation](expected)
    out = bias_activation_(x, bias, activation)
    assert out is x
    torch.testing.assert_close(x.double(), expected, atol=GELU_ATOL * 10,
                               rtol=0)


@needs_native
def test_bias_activation_into_out_keeps_the_sum():
    torch.manual_seed(0)
    x = torch.randn(100, 40)
    bias = torch.randn(40)
    out = torch.empty_like(x)
    expected_sum = x + bias
    assert bias_activation_(x, bias, 'gelu', out=out) is out
    torch.testing.assert_close(x, expected_sum, atol=0, rtol=0)
    torch.testing.assert_close(out.double(), F.gelu(expected_sum.double()),
                               atol=GELU_ATOL * 10, rtol=0)


@needs_native
def test_gelu_over_the_whole_range_and_special_values():
    x = torch.cat([torch.linspace(-30, 30, 600_003),
                   torch.tensor([0., -0., 1e-30, float('inf'), -1e30])])
    y = bias_activation_(x.clone(), None, 'gelu')
    finite = x[:-5].double()
    err = (y[:-5].double() - F.gelu(finite)).abs()
    # Relative to max(1, |x|): GELU grows like x.
    assert (err / finite.abs().clamp_min(1)).max() < GELU_ATOL
    assert (y[:-5][x[:-5] < -6] == 0).all()
    assert y[-5] == 0 and y[-3] == pytest.approx(0.5e-30)
    assert y[-2] == float('inf') and y[-1] == 0
    assert bias_activation_(torch.tensor([float('nan')]), None,
                            'gelu').isnan().all()


@needs_native
def test_gelu_and_slope_against_fp64_autograd():
    # 40_013 values: a partial last vector; beyond +-6 Phi is clamped.
    x = torch.cat([torch.linspace(-20, 20, 40_000), torch.randn(13)])
    slope, act = x.clone(), torch.empty_like(x)
    native_ops().gelu_and_slope_(slope, act)
    x64 = x.double().requires_grad_()
    F.gelu(x64).sum().backward()
    err = (act.double() - F.gelu(x64.detach())).abs()
    assert (err / x64.detach().abs().clamp_min(1)).max() < GELU_ATOL
    assert (slope.double() - x64.grad).abs().max() < GELU_ATOL
    with pytest.raises(RuntimeError, match='act must not be x'):
        native_ops().gelu_and_slope_(slope, slope)


def test_bias_activation_fallback_and_bad_name():
    x = torch.randn(7, 6, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    expected = F.gelu(x + bias)
    torch.testing.assert_close(bias_activation_(x, bias, 'gelu'), expected)
    with pytest.raises(ValueError, match="Unknown activation 'silu'"):
        bias_activation_(x, bias, 'silu')


@needs_native
def test_bias_activation_rejects_a_wrong_bias_size():
    with pytest.raises(RuntimeError, match='bias must have 8 elements'):
        bias_activation_(torch.randn(4, 8), torch.randn(5), 'relu')


def _fp64_twin(fc1, fc2):
    twins = nn.Linear(fc1.in_features, fc1.out_features,
                      bias=fc1.bias is not None).double(), \
        nn.Linear(fc2.in_features, fc2.out_features,
                  bias=fc2.bias is not None).double()
    twins[0].load_state_dict(fc1.state_dict())
    twins[1].load_state_dict(fc2.state_dict())
    return twins


@needs_native
@pytest.mark.parametrize('chunk_elements', [1000, 1 << 21])
@pytest.mark.parametrize('bias', [True, False])
def test_mlp_forward_backward_against_fp64(monkeypatch, chunk_elements,
                                           bias):
    # 1000 elements: 10 rows per chunk, 13 chunks with a short last one.
    monkeypatch.setattr(mlp_ops, 'MLP_CHUNK_ELEMENTS', chunk_elements)
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(24, 96, bias=bias), nn.Linear(96, 16, bias=bias)
    x = torch.randn(2, 7, 9, 24, requires_grad=True)
    assert native_mlp_supported(x, fc1, fc2)
    y = mlp(x, fc1, fc2)
    assert y.shape == (2, 7, 9, 16)
    assert 'GeluMlpFunction' in type(y.grad_fn.next_functions[0][0]).__name__
    grad = torch.randn_like(y)
    y.backward(grad)

    f1, f2 = _fp64_twin(fc1, fc2)
    x64 = x.detach().double().requires_grad_()
    y64 = f2(F.gelu(f1(x64)))
    y64.backward(grad.double())
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)
    pairs = [(x.grad, x64.grad), (fc1.weight.grad, f1.weight.grad),
             (fc2.weight.grad, f2.weight.grad)]
    if bias:
        pairs += [(fc1.bias.grad, f1.bias.grad), (fc2.bias.grad, f2.bias.grad)]
    for got, expected in pairs:
        torch.testing.assert_close(got.double(), expected, atol=1e-5,
                                   rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(
            mlp(x, fc1, fc2).double(), y64, atol=1e-5, rtol=1e-5)


@needs_native
def test_mlp_skips_the_gradients_nobody_needs():
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(8, 32), nn.Linear(32, 8)
    fc1.requires_grad_(False)
    x = torch.randn(5, 8)
    mlp(x, fc1, fc2).sum().backward()
    assert fc1.weight.grad is None and fc1.bias.grad is None
    assert fc2.weight.grad is not None and fc2.bias.grad is not None
    expected = torch.autograd.grad(fc2(F.gelu(fc1(x))).sum(), fc2.weight)[0]
    torch.testing.assert_close(fc2.weight.grad, expected)


@needs_native
def test_mlp_backward_twice_is_an_error():
    fc1, fc2 = nn.Linear(8, 32), nn.Linear(32, 8)
    y = mlp(torch.randn(3, 8, requires_grad=True), fc1, fc2).sum()
    y.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match='ran twice.*retain_graph'):
        y.backward()


def test_mlp_runs_pytorch_ops_where_the_kernels_cannot():
    fc1, fc2 = nn.Linear(8, 32).double(), nn.Linear(32, 8).double()
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert not native_mlp_supported(x, fc1, fc2)
    y = mlp(x, fc1, fc2)
    torch.testing.assert_close(y, fc2(F.gelu(fc1(x))), atol=0, rtol=0)


@needs_native
def test_block_mlp_trains_like_the_pytorch_one(monkeypatch):
    # The training-form block MLP on channels-last NCHW, against the same
    # layers on PyTorch ops (DWNET_MM_NATIVE=0).
    torch.manual_seed(0)
    mlp = Mlp(16)
    x = torch.randn(2, 16, 5, 6).to(memory_format=torch.channels_last)
    x.requires_grad_()
    y = mlp(x)
    y.square().sum().backward()
    native_grads = [x.grad] + [p.grad for p in mlp.parameters()]
    x2 = x.detach().clone().requires_grad_()
    mlp.zero_grad()
    monkeypatch.setenv('DWNET_MM_NATIVE', '0')
    y2 = mlp(x2)
    assert 'GeluMlp' not in str(y2.grad_fn.next_functions)
    y2.square().sum().backward()
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)
    for got, expected in zip(native_grads,
                             [x2.grad] + [p.grad for p in mlp.parameters()]):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _fp64_mlp(x, w1, b1, w2, b2):
    hidden = x.double() @ w1.double().t()
    if b1 is not None:
        hidden += b1.double()
    out = F.gelu(hidden) @ w2.double().t()
    return out if b2 is None else out + b2.double()


@needs_native
@pytest.mark.parametrize('rows,width,hidden,out_width', [
    # rows not a multiple of the blocks or tiles; one and several 384-wide
    # passes over the inner size; a hidden width of 1024, whose rows lie
    # 4 KiB apart (fc2 packs them first); 16-wide panels (AVX2 tiles).
    (301, 24, 96, 32),
    (100, 96, 384, 96),
    (37, 40, 1024, 32),
    (13, 8, 48, 16),
])
@pytest.mark.parametrize('block_rows', [12, 30, 1000])
@pytest.mark.parametrize('bias', [True, False])
def test_fused_mlp_matches_fp64(rows, width, hidden, out_width, block_rows,
                                bias):
    torch.manual_seed(0)
    x = torch.randn(rows, width)
    w1, w2 = torch.randn(hidden, width) / 4, torch.randn(out_width,
                                                         hidden) / 8
    b1 = torch.randn(hidden) if bias else None
    b2 = torch.randn(out_width) if bias else None
    packed = [packed_linear_weight(w) for w in (w1, w2)]
    expected = _fp64_mlp(x, w1, b1, w2, b2)
    out = torch.full((rows, out_width), float('nan'))
    native_ops().fused_mlp(x, packed[0], b1, packed[1], b2, out, False,
                           block_rows)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    start = torch.randn(rows, out_width)
    out = start.clone()
    native_ops().fused_mlp(x, packed[0], b1, packed[1], b2, out, True,
                           block_rows)
    torch.testing.assert_close(out.double(), expected + start.double(),
                               atol=1e-5, rtol=1e-5)


@needs_native
def test_fused_mlp_residual_update_in_place():
    """``x += fc2(gelu(fc1(x)))`` with ``out`` being ``x`` itself, as the
    deploy blocks call it."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(32, 128), nn.Linear(128, 32)
    x = torch.randn(250, 32)
    expected = x.double() + _fp64_mlp(x, fc1.weight, fc1.bias, fc2.weight,
                                      fc2.bias).detach()
    with torch.no_grad():
        assert fused_mlp_supported(x, fc1.weight, fc2.weight)
        assert fused_mlp(x, x, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
                         accumulate=True) is x
    torch.testing.assert_close(x.double(), expected, atol=1e-5, rtol=1e-5)


@needs_native
def test_fused_mlp_errors_name_the_problem():
    ops = native_ops()
    w1, w2 = torch.randn(64, 16), torch.randn(32, 64)
    p1, p2 = packed_linear_weight(w1), packed_linear_weight(w2)
    x = torch.randn(40, 16)
    with pytest.raises(RuntimeError, match=r'x must be \(M, 16\)'):
        ops.fused_mlp(torch.randn(40, 8), p1, None, p2, None,
                      torch.empty(40, 32), False, 12)
    with pytest.raises(RuntimeError, match='fc2 takes 16 inputs but fc1 '
                       'gives 64'):
        ops.fused_mlp(x, p1, None, packed_linear_weight(torch.randn(32, 16)),
                      None, torch.empty(40, 32), False, 12)
    with pytest.raises(RuntimeError, match=r'out must be \(40, 32\)'):
        ops.fused_mlp(x, p1, None, p2, None, torch.empty(40, 16), False, 12)
    with pytest.raises(RuntimeError, match='not overlap'):
        buffer = torch.randn(41 * 16)
        ops.fused_mlp(buffer[16:].view(40, 16), p1, None,
                      packed_linear_weight(torch.randn(16, 64)), None,
                      buffer[:640].view(40, 16), False, 12)
    with pytest.raises(RuntimeError, match='block_rows must be positive'):
        ops.fused_mlp(x, p1, None, p2, None, torch.empty(40, 32), False, 0)


@needs_native
def test_mlp_inference_runs_fused_where_the_weights_fit(monkeypatch):
    """The training form's MLP in inference and the deploy form's residual
    MLP take the fused kernel for small weights and the chunks above
    FUSED_MLP_MAX_WEIGHT_ELEMENTS, with the same results."""
    calls = []
    fused = native_ops().fused_mlp
    monkeypatch.setattr(native_ops(), 'fused_mlp',
                        lambda *args: calls.append(args) or fused(*args))
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(32, 128), nn.Linear(128, 32)
    x = torch.randn(mlp_ops.MIN_PACKED_ROWS + 7, 32)
    expected = _fp64_mlp(x, fc1.weight, fc1.bias, fc2.weight,
                         fc2.bias).detach()
    results = []
    for limit, fused_calls in ((mlp_ops.FUSED_MLP_MAX_WEIGHT_ELEMENTS, 2),
                               (fc1.weight.numel() * 2 - 1, 0)):
        monkeypatch.setattr(mlp_ops, 'FUSED_MLP_MAX_WEIGHT_ELEMENTS', limit)
        calls.clear()
        with torch.no_grad():
            results.append(mlp(x, fc1, fc2))
            results.append(mlp(x, fc1, fc2, residual=True) - x)
        assert len(calls) == fused_calls
    for result in results:
        torch.testing.assert_close(result.double(), expected, atol=1e-5,
                                   rtol=1e-5)


def _mlp_node(y):
    """The autograd node of :func:`mlp` under its output view."""
    return type(y.grad_fn.next_functions[0][0]).__name__


def _mlp_gradients_fp64(x, fc1, fc2, grad):
    f1, f2 = _fp64_twin(fc1, fc2)
    x64 = x.detach().double().requires_grad_(x.requires_grad)
    f2(F.gelu(f1(x64))).backward(grad.double())
    return x64, f1, f2


@needs_native
@pytest.mark.parametrize('width,hidden', [(32, 128), (48, 96)])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('frozen_fc1', [False, True])
def test_recomputing_mlp_gradients_match_fp64(width, hidden, bias,
                                              frozen_fc1):
    """Training with small weights (stage 1) keeps no hidden activations:
    the backward computes fc1 again per block of rows. 48 -> 96: 16-wide
    panels."""
    torch.manual_seed(0)
    fc1 = nn.Linear(width, hidden, bias=bias)
    fc2 = nn.Linear(hidden, width, bias=bias)
    fc1.requires_grad_(not frozen_fc1)
    x = torch.randn(mlp_ops.MIN_PACKED_ROWS + 29, width, requires_grad=True)
    y = mlp(x, fc1, fc2)
    assert _mlp_node(y) == 'FusedMlpFunctionBackward'
    grad = torch.randn_like(y)
    y.backward(grad)
    x64, f1, f2 = _mlp_gradients_fp64(x, fc1, fc2, grad)
    torch.testing.assert_close(y.double(), f2(F.gelu(f1(x64))), atol=1e-5,
                               rtol=1e-5)
    pairs = [(x.grad, x64.grad), (fc2.weight.grad, f2.weight.grad)]
    if bias:
        pairs.append((fc2.bias.grad, f2.bias.grad))
    if frozen_fc1:
        assert fc1.weight.grad is None
    else:
        pairs.append((fc1.weight.grad, f1.weight.grad))
        if bias:
            pairs.append((fc1.bias.grad, f1.bias.grad))
    for got, expected in pairs:
        assert relative_error(got, expected) < 1e-6


@needs_native
@pytest.mark.parametrize('block_rows', [12, 100, 5000])
def test_fused_mlp_backward_blocks_and_requests(block_rows):
    """The native backward with blocks of any size (a thread's several
    blocks add into its own sums) gives only the gradients asked for."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(32, 64), nn.Linear(64, 16)
    x = torch.randn(777, 32)
    grad = torch.randn(777, 16)
    x64, f1, f2 = _mlp_gradients_fp64(x.requires_grad_(), fc1, fc2, grad)
    w1, w2 = fc1.weight.detach(), fc2.weight.detach()
    args = (grad, x.detach(), w1, packed_linear_weight(w1, cache=False),
            fc1.bias.detach(), w2, block_rows)
    grads = native_ops().fused_mlp_backward(*args, True, True, True, True,
                                            True)
    expected = [x64.grad, f1.weight.grad, f1.bias.grad, f2.weight.grad,
                f2.bias.grad]
    for got, want in zip(grads, expected):
        assert relative_error(got, want) < 1e-6
    only_w2 = native_ops().fused_mlp_backward(*args, False, False, False,
                                              True, False)
    assert [g is None for g in only_w2] == [True, True, True, False, True]
    torch.testing.assert_close(only_w2[3], grads[3], atol=0, rtol=0)


@needs_native
def test_recomputing_mlp_backward_runs_twice_and_large_weights_keep_hidden(
        monkeypatch):
    """Nothing saved is overwritten, so ``retain_graph`` reruns work; above
    RECOMPUTE_MLP_MAX_WEIGHT_ELEMENTS the MLP keeps fc1's output."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(16, 64), nn.Linear(64, 16)
    x = torch.randn(mlp_ops.MIN_PACKED_ROWS, 16, requires_grad=True)
    y = mlp(x, fc1, fc2).square().sum()
    y.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    y.backward()
    torch.testing.assert_close(x.grad, first, atol=0, rtol=0)
    monkeypatch.setattr(mlp_ops, 'RECOMPUTE_MLP_MAX_WEIGHT_ELEMENTS',
                        fc1.weight.numel() * 2 - 1)
    assert _mlp_node(mlp(x, fc1, fc2)) == 'GeluMlpFunctionBackward'

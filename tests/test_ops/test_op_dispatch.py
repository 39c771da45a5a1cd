"""The public ops of dwnet_mm.ops (one per op, backend chosen inside) against
plain PyTorch computations of the same function, in every backend: native
kernels on and off, fp32 and fp64, with and without autograd, odd sizes,
even kernels, and the export (taps) forms."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dwnet_mm.ops.backend as backend_module
from dwnet_mm.models.layers.dynamic_conv import (
    DynamicDepthwiseConv2d, FoldedInhomogeneousDynamicConv2d,
    InhomogeneousDynamicConv2d, tap_major)
from dwnet_mm.ops import (depthwise_conv, dynamic_depthwise_conv,
                          i_dynamic_conv_from_hidden, linear, mlp, native_ops,
                          set_native)
from dwnet_mm.ops.i_dynamic import InhomogeneousDynamicConvFunction

F32, F64 = torch.float32, torch.float64
# (N, H, W, C, groups, k, dtype): odd sizes (a small map) in both dtypes
# and kernel sizes, and a stage-1 shape of DWNet-T in fp32 (the native
# kernels' dtype).
CASES = [(2, 13, 17, 32, 8, 7, F32), (2, 13, 17, 32, 8, 7, F64),
         (2, 13, 17, 32, 8, 12, F32), (2, 13, 17, 32, 8, 12, F64),
         (1, 56, 56, 96, 32, 7, F32)]
ODD_K_CASES = [case for case in CASES if case[5] % 2]


@pytest.fixture(params=['native', 'pytorch'])
def backend(request):
    if request.param == 'pytorch':
        set_native(False)
    return request.param


def tolerances(dtype):
    return dict(atol=2e-4, rtol=2e-4) if dtype == torch.float32 else \
        dict(atol=1e-9, rtol=1e-9)


def channels_last(N, H, W, C, dtype, grad=False):
    """A channels-last NCHW tensor and its NHWC view (same memory)."""
    x = torch.randn(N, C, H, W, dtype=dtype).contiguous(
        memory_format=torch.channels_last).requires_grad_(grad)
    return x, x.permute(0, 2, 3, 1)


def assert_same(got, expected, dtype):
    torch.testing.assert_close(got, expected, **tolerances(dtype))


def assert_same_scale(got, expected, dtype):
    """Close relative to the largest value: gradients are long sums, whose
    small entries carry the rounding of the large ones."""
    scale = expected.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(got / scale, expected / scale,
                               **tolerances(dtype))


def grads(outputs, inputs, seed=1):
    """Gradients of ``sum(out * g)`` (the same random g per output)."""
    generator = torch.Generator().manual_seed(seed)
    total = sum((out * torch.randn(out.shape, generator=generator,
                                   dtype=out.dtype)).sum()
                for out in outputs)
    return torch.autograd.grad(total, inputs)


def nchw(y):
    return y.permute(0, 3, 1, 2)


@pytest.mark.parametrize('N,H,W,C,G,k,dtype', CASES)
@pytest.mark.parametrize('grad', [False, True])
def test_depthwise_conv(backend, N, H, W, C, G, k, dtype, grad):
    torch.manual_seed(0)
    conv = nn.Conv2d(C, C, k, padding=k // 2, groups=C).to(dtype)
    x, x_nhwc = channels_last(N, H, W, C, dtype, grad)
    with torch.set_grad_enabled(grad):
        # PyTorch's conv pads k // 2 on both sides: cropped for even k.
        expected = F.relu(conv(x)[..., :H, :W])
        got = depthwise_conv(x_nhwc, conv.weight, conv.bias, relu=True)
    assert got.shape == (N, H, W, C) and got.is_contiguous()
    assert_same(nchw(got), expected, dtype)
    if grad:
        inputs = (x, conv.weight, conv.bias)
        for a, b in zip(grads([nchw(got)], inputs), grads([expected],
                                                          inputs)):
            assert_same_scale(a, b, dtype)


@pytest.mark.parametrize('N,H,W,C,G,k,dtype', CASES)
@pytest.mark.parametrize('grad', [False, True])
def test_dynamic_depthwise_conv(backend, N, H, W, C, G, k, dtype, grad):
    torch.manual_seed(0)
    module = DynamicDepthwiseConv2d(C, k).to(dtype).eval()
    nn.init.normal_(module.bias)
    x, x_nhwc = channels_last(N, H, W, C, dtype, grad)
    with torch.set_grad_enabled(grad):
        kernels = module.predict_kernel(x)
        # One grouped conv over the batch folded into the channels (its own
        # kernels: the gradients are taken through each graph once).
        expected = F.conv2d(x.reshape(1, N * C, H, W),
                            module.predict_kernel(x),
                            module.bias.repeat(N), padding=k // 2,
                            groups=N * C).view(N, C, H + 1 - k % 2,
                                               W + 1 - k % 2)[..., :H, :W]
        got = dynamic_depthwise_conv(x_nhwc, kernels, module.bias)
        got_relu = dynamic_depthwise_conv(x_nhwc, kernels, module.bias,
                                          relu=True)
    assert got.shape == (N, H, W, C) and got.is_contiguous()
    assert_same(nchw(got), expected, dtype)
    assert_same(nchw(got_relu), F.relu(expected), dtype)
    if grad:
        inputs = (x, module.bias, module.conv1.weight, module.conv2.weight)
        for a, b in zip(grads([nchw(got)], inputs), grads([expected],
                                                          inputs)):
            assert_same_scale(a, b, dtype)


def unfolded_i_dynamic(x, kernels, k):
    """The I-Dynamic conv by unfolding: NCHW ``x``, (N, G*k*k, H, W)
    ``kernels``; the window at offsets -k//2 .. k-1-k//2."""
    N, C, H, W = x.shape
    G = kernels.shape[1] // (k * k)
    padded = F.pad(x, (k // 2, (k - 1) // 2, k // 2, (k - 1) // 2))
    cols = F.unfold(padded, k).view(N, G, C // G, k * k, H, W)
    return (cols * kernels.view(N, G, 1, k * k, H, W)).sum(3).view(
        N, C, H, W)


def _generator(module):
    """The last generator layer of an I-Dynamic training module, its rows
    tap-major."""
    return tap_major(module.conv2[0], module.i_dynamic_groups)


@pytest.mark.parametrize('N,H,W,C,G,k,dtype', CASES)
@pytest.mark.parametrize('grad', [False, True])
def test_i_dynamic_conv_like_the_training_module(backend, N, H, W, C, G,
                                                 k, dtype, grad):
    torch.manual_seed(0)
    module = InhomogeneousDynamicConv2d(C, k,
                                        i_dynamic_groups=G).to(dtype).eval()
    x, x_nhwc = channels_last(N, H, W, C, dtype, grad)
    with torch.set_grad_enabled(grad):
        expected = unfolded_i_dynamic(x, module.conv2(module.conv1(x)), k)
        weight, bias = _generator(module)
        got = i_dynamic_conv_from_hidden(x_nhwc,
                                         module.hidden_features(x_nhwc),
                                         weight, bias, k, G)
    assert got.shape == (N, H, W, C) and got.is_contiguous()
    assert_same(nchw(got), expected, dtype)
    if grad:
        inputs = (x, *module.parameters())
        for a, b in zip(grads([nchw(got)], inputs), grads([expected],
                                                          inputs)):
            assert_same_scale(a, b, dtype)


@pytest.mark.parametrize('N,H,W,C,G,k,dtype', ODD_K_CASES)
@pytest.mark.parametrize('grad', [False, True])
def test_i_dynamic_conv_like_the_deploy_module(backend, N, H, W, C, G, k,
                                               dtype, grad):
    """With the folded BN (input scale, output bias) and ReLU, in both
    channel orders."""
    torch.manual_seed(0)
    module = InhomogeneousDynamicConv2d(C, k,
                                        i_dynamic_groups=G).to(dtype).eval()
    norm = nn.BatchNorm2d(C).to(dtype).eval()
    for t in (norm.weight, norm.bias, norm.running_mean):
        nn.init.normal_(t)
    nn.init.uniform_(norm.running_var, 0.5, 2)
    folded = FoldedInhomogeneousDynamicConv2d.from_modules(module, norm)
    fc1, fc2 = folded.fc1, folded.fc2
    # The folded module takes and gives interleaved channels.
    order = folded.channel_order
    inverse = torch.argsort(order)
    _, x = channels_last(N, H, W, C, dtype, grad)
    scale, bias = folded.input_scale[inverse], folded.bias[inverse]
    with torch.set_grad_enabled(grad):
        grouped = (fc2.weight.view(k * k, G, -1).transpose(0, 1).reshape(
            G * k * k, -1), fc2.bias.view(k * k, G).t().reshape(-1))
        kernels = F.linear(F.relu(fc1(x[..., order])),
                           *grouped).permute(0, 3, 1, 2)
        expected = unfolded_i_dynamic(nchw(x) * scale.view(1, C, 1, 1),
                                      kernels, k)
        expected = F.relu(expected + bias.view(1, C, 1, 1)).permute(
            0, 2, 3, 1)
        got = folded(x[..., order])[..., inverse]
        hidden = F.relu(fc1(x[..., order]))
        got_grouped = i_dynamic_conv_from_hidden(x,
                                                 hidden,
                                                 fc2.weight,
                                                 fc2.bias,
                                                 k,
                                                 G,
                                                 scale,
                                                 bias,
                                                 relu=True)
    assert_same(got, expected, dtype)
    assert_same(got_grouped, expected, dtype)
    if grad:
        inputs = (x, *folded.parameters())
        for a, b in zip(grads([got], inputs), grads([expected], inputs)):
            assert_same_scale(a, b, dtype)


@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('N,H,W,C,G,k,dtype', ODD_K_CASES)
def test_mlp(backend, N, H, W, C, G, k, dtype, grad):
    torch.manual_seed(0)
    shape = (N, H, W, C)
    fc1 = nn.Linear(C, 4 * C).to(dtype)
    fc2 = nn.Linear(4 * C, C).to(dtype)
    x = torch.randn(shape, dtype=dtype, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        hidden = x @ fc1.weight.t() + fc1.bias
        expected = 0.5 * hidden * (1 + torch.erf(hidden / 2**0.5)) @ \
            fc2.weight.t() + fc2.bias
        got = mlp(x, fc1, fc2)
        got_relu = linear(x, fc1.weight, fc1.bias, relu=True)
    assert got.shape == shape and got.is_contiguous()
    assert_same(got, expected, dtype)
    assert_same(got_relu, F.relu(x @ fc1.weight.t() + fc1.bias), dtype)
    if grad:
        inputs = (x, *fc1.parameters(), *fc2.parameters())
        for a, b in zip(grads([got], inputs), grads([expected], inputs)):
            assert_same_scale(a, b, dtype)


def test_export_forms(monkeypatch):
    """While exporting, each op takes its plain-op form, with the same
    results."""
    torch.manual_seed(0)
    N, H, W, C, G, k = 2, 13, 17, 32, 8, 7
    x = torch.randn(N, H, W, C)
    dw = nn.Conv2d(C, C, 6, groups=C)
    kernels, bias = torch.randn(N, C, 6, 6), torch.randn(C)
    i_dynamic = InhomogeneousDynamicConv2d(C, k, i_dynamic_groups=G).eval()
    weight, generator_bias = _generator(i_dynamic)
    hidden = i_dynamic.hidden_features(x)
    scale = torch.rand(C)
    fc1, fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def run():
        with torch.no_grad():
            return [
                depthwise_conv(x, dw.weight, dw.bias, relu=True),
                dynamic_depthwise_conv(x, kernels, bias, relu=True),
                i_dynamic_conv_from_hidden(x,
                                           hidden,
                                           weight,
                                           generator_bias,
                                           k,
                                           G,
                                           scale,
                                           bias,
                                           relu=True),
                mlp(x, fc1, fc2),
            ]

    expected = run()
    monkeypatch.setattr(backend_module, 'onnx_exporting', lambda: True)
    for got, want in zip(run(), expected):
        assert_same(got, want, torch.float32)


def _spy(monkeypatch, module, name, calls):
    function = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return function(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.mark.skipif(native_ops() is None, reason='no native kernels here')
def test_backends_chosen(monkeypatch):
    """Native kernels for fp32 dynamic and I-Dynamic convs (the I-Dynamic
    conv's autograd Function with autograd), never for even kernels or
    groups that are not a multiple of 8, nor with the kernels switched off;
    the static conv always in PyTorch's conv (the native kernels did not
    win on the whole model)."""
    calls = []
    _spy(monkeypatch, native_ops(), 'depthwise_conv_nhwc', calls)
    _spy(monkeypatch, native_ops(), 'i_dynamic_conv_nhwc', calls)
    torch.manual_seed(0)
    _, x = channels_last(2, 13, 17, 32, F32)
    for k, G, native in ((7, 8, True), (12, 8, False), (7, 4, False)):
        calls.clear()
        depthwise_conv(x, torch.randn(32, 1, k, k))
        dynamic_depthwise_conv(x, torch.randn(2, 32, k, k))
        module = InhomogeneousDynamicConv2d(32, k, i_dynamic_groups=G).eval()
        with torch.no_grad():
            i_dynamic_conv_from_hidden(x, module.hidden_features(x),
                                       *_generator(module), k, G)
        assert len(calls) == (2 if native else k % 2)
    module = InhomogeneousDynamicConv2d(32, 7, i_dynamic_groups=8).eval()
    out = i_dynamic_conv_from_hidden(x, module.hidden_features(x),
                                     *_generator(module), 7, 8)
    assert 'InhomogeneousDynamicConvFunction' in type(out.grad_fn).__name__ \
        or _in_graph(out, InhomogeneousDynamicConvFunction)
    calls.clear()
    set_native(False)
    dynamic_depthwise_conv(x, torch.randn(2, 32, 7, 7))
    out = i_dynamic_conv_from_hidden(x, module.hidden_features(x),
                                     *_generator(module), 7, 8)
    assert not calls and not _in_graph(out, InhomogeneousDynamicConvFunction)


def _in_graph(out, function):
    """Whether ``function`` is a node of ``out``'s autograd graph."""
    nodes, seen = [out.grad_fn], set()
    while nodes:
        node = nodes.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith(function.__name__):
            return True
        nodes.extend(n for n, _ in node.next_functions)
    return False


class _AllOps(nn.Module):
    """Every op in a row on NHWC activations, NCHW in and out (the input
    of :func:`export_onnx`)."""

    def __init__(self, C=32, G=8, k=7):
        super().__init__()
        self.k, self.G = k, G
        self.static = nn.Conv2d(C, C, k - 1, groups=C)  # an even kernel
        self.generator = nn.Linear(C, C * k * k)
        self.bias = nn.Parameter(torch.randn(C))
        self.hidden = nn.Linear(C, C // 4)
        self.kernels = nn.Linear(C // 4, G * k * k)
        self.scale = nn.Parameter(torch.rand(C) + 0.5)
        self.fc1, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = depthwise_conv(x, self.static.weight, self.static.bias, True)
        kernels = linear(x.mean((1, 2)), self.generator.weight,
                         self.generator.bias).reshape(
                             x.shape[0], -1, self.k, self.k)
        x = dynamic_depthwise_conv(x, kernels, self.bias, relu=True)
        for interleaved in (False, True):
            hidden = linear(x, self.hidden.weight, self.hidden.bias,
                            relu=True)
            x = i_dynamic_conv_from_hidden(
                x, hidden, self.kernels.weight, self.kernels.bias, self.k,
                self.G, self.scale, self.bias, relu=True,
                interleaved=interleaved)
        return (x + mlp(x, self.fc1, self.fc2)).permute(0, 3, 1, 2)


def test_onnx_export(tmp_path):
    """The ops export to standard ONNX ops that follow the batch and map
    size of the input at run time."""
    pytest.importorskip('onnx')
    pytest.importorskip('onnxruntime')
    from dwnet_mm.export import (export_onnx, max_relative_error,
                                 nonstandard_ops, onnxruntime_session,
                                 run_onnxruntime)
    torch.manual_seed(0)
    model = _AllOps().eval()
    path = str(tmp_path / 'ops.onnx')
    export_onnx(model, torch.randn(2, 32, 13, 17), path)
    assert nonstandard_ops(path) == []
    session = onnxruntime_session(path)
    for shape in ((1, 32, 9, 20), (3, 32, 13, 17)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
        assert max_relative_error(run_onnxruntime(session, x),
                                  [expected]) < 1e-4

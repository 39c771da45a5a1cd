"""The I-Dynamic conv op (native kernels where they run) against an fp64
unfold."""
import platform

import pytest
import torch
import torch.nn.functional as F

from dwnet_mm.models import DWNet
from dwnet_mm.models.layers import (DeployDWNetBlock, DWNetBlock,
                                    InhomogeneousDynamicConv2d)
import dwnet_mm.ops.i_dynamic as i_dynamic_module
from dwnet_mm.ops import (i_dynamic_conv_from_hidden, interleaved_channels,
                          native_ops, set_native)

X86 = platform.machine().lower() in ('x86_64', 'amd64')
needs_native = pytest.mark.skipif(
    not X86, reason='the native kernels are x86-64 only')


def native_i_dynamic_supported(x, k, groups):
    return native_ops() is not None and \
        i_dynamic_module._runs_native(x, k, groups)


def i_dynamic_conv_nhwc(x, hidden, weight, bias, k, groups, scale=None,
                        out_bias=None, relu=False, interleaved=False):
    with torch.no_grad():
        return i_dynamic_conv_from_hidden(x, hidden, weight, bias, k, groups,
                                          scale, out_bias, relu, interleaved)


def reference(x, hidden, weight, bias, k, groups, scale=None, out_bias=None):
    """fp64: kernels from a matmul (rows tap-major), applied through an
    explicit unfold."""
    N, H, W, C = x.shape
    kernels = hidden.double() @ weight.double().t()
    if bias is not None:
        kernels = kernels + bias.double()
    kernels = kernels.view(N, H * W, k * k, groups).transpose(2, 3)
    kernels = kernels.reshape(N, H * W, groups, 1, k * k)
    cols = F.unfold(x.double().permute(0, 3, 1, 2), k, padding=k // 2)
    cols = cols.view(N, groups, C // groups, k * k,
                     H * W).permute(0, 4, 1, 2, 3)
    if scale is not None:
        cols = cols * scale.double().view(1, 1, groups, -1, 1)
    out = (cols * kernels).sum(-1).reshape(N, H, W, C)
    if out_bias is not None:
        out = out + out_bias.double()
    return out


CASES = [
    # N, H, W, C, G, k: DWNet's 32 groups with 1-24 channels each, rows
    # narrower than the kernel and than a tile, odd widths (edge pixels and
    # partial tiles), a group count the native kernels do not take (12).
    (2, 9, 11, 96, 32, 7),
    (1, 6, 10, 768, 32, 7),
    (2, 5, 3, 32, 32, 7),
    (1, 1, 1, 64, 32, 7),
    (1, 7, 13, 48, 8, 5),
    (1, 4, 9, 64, 16, 9),
    (2, 6, 7, 128, 64, 3),
    (1, 5, 8, 96, 12, 7),
]


@needs_native
@pytest.mark.parametrize('N,H,W,C,G,k', CASES)
@pytest.mark.parametrize('affine', [False, True])
def test_matches_unfold_reference(N, H, W, C, G, k, affine):
    torch.manual_seed(0)
    x = torch.randn(N, H, W, C)
    assert native_i_dynamic_supported(x, k, G) == (G % 8 == 0)
    hidden = torch.randn(N, H, W, C // 4 + 1)
    weight = torch.randn(G * k * k, hidden.shape[-1]) * 0.2
    bias = torch.randn(G * k * k)
    scale = torch.rand(C) + 0.5 if affine else None
    out_bias = torch.randn(C) if affine else None
    out = i_dynamic_conv_nhwc(x, hidden, weight, bias, k, G, scale, out_bias)
    want = reference(x, hidden, weight, bias, k, G, scale, out_bias)
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-4)
    relu = i_dynamic_conv_nhwc(x, hidden, weight, bias, k, G, scale,
                               out_bias, relu=True)
    torch.testing.assert_close(relu, out.clamp_min(0), rtol=0, atol=0)


def test_interleaved_channel_order():
    # C = 6, G = 2: channel s of group g is g * 3 + s; interleaved index
    # s * 2 + g.
    assert interleaved_channels(6, 2).tolist() == [0, 3, 1, 4, 2, 5]
    assert interleaved_channels(8, 8).tolist() == list(range(8))


@needs_native
@pytest.mark.parametrize('N,H,W,C,G,k',
                         [case for case in CASES if case[4] % 8 == 0])
def test_interleaved_order_matches_reference(N, H, W, C, G, k):
    # 1, 2, 3, 4, 6 and 24 channels per group: every register tile width.
    torch.manual_seed(4)
    x = torch.randn(N, H, W, C)
    hidden = torch.randn(N, H, W, C // 4 + 1)
    weight = torch.randn(G * k * k, hidden.shape[-1]) * 0.2
    bias = torch.randn(G * k * k)
    scale, out_bias = torch.rand(C) + 0.5, torch.randn(C)
    order = interleaved_channels(C, G)
    assert native_i_dynamic_supported(x, k, G)
    out = i_dynamic_conv_nhwc(x[..., order].contiguous(), hidden, weight,
                              bias, k, G, scale[order], out_bias[order],
                              relu=True, interleaved=True)
    want = reference(x, hidden, weight, bias, k, G, scale, out_bias)
    torch.testing.assert_close(out.double(), want[..., order].clamp_min(0),
                               rtol=1e-4, atol=1e-4)


@needs_native
def test_native_kernels_need_groups_of_eight():
    x = torch.randn(1, 5, 8, 96)
    assert not native_i_dynamic_supported(x, 7, 12)
    hidden = torch.randn(1, 5, 8, 4)
    weight = torch.randn(12 * 49, 4)
    with pytest.raises(RuntimeError, match='multiple of 8'):
        native_ops().i_dynamic_conv_nhwc(x, hidden.view(40, 4), weight, None,
                                         7, chunk_pixels=8)
    with pytest.raises(RuntimeError, match='multiple of 8'):
        native_ops().i_dynamic_backward(x, torch.randn(40 * 49 * 12), x, 7,
                                        True, True)


@needs_native
@pytest.mark.parametrize('channels', [96, 192])
def test_deploy_block_runs_the_interleaved_kernel(channels, monkeypatch):
    # DWNet-T's first two stages (3 and 6 channels per group): the deploy
    # block reorders its 1x1 convs around the kernel; its output must equal
    # the training form's on PyTorch ops.
    torch.manual_seed(5)
    block = DWNetBlock(channels, conv_type='i_dynamic').eval()
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    deployed = DeployDWNetBlock.from_block(block)
    x = torch.randn(2, 15, 17, channels)
    calls = []
    function = native_ops().i_dynamic_conv_nhwc
    monkeypatch.setattr(native_ops(), 'i_dynamic_conv_nhwc',
                        lambda *a, **k: calls.append(1) or function(*a, **k))
    with torch.no_grad():
        out = deployed(x)
        assert calls
        set_native(False)
        ref = block(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@needs_native
def test_chunks_cover_every_pixel(monkeypatch):
    # Chunks of a few pixels: chunk and row boundaries fall anywhere.
    monkeypatch.setattr(i_dynamic_module, 'I_DYNAMIC_CHUNK_PIXELS', 5)
    torch.manual_seed(1)
    x = torch.randn(3, 7, 9, 64)
    hidden = torch.randn(3, 7, 9, 16)
    weight = torch.randn(32 * 49, 16) * 0.2
    out = i_dynamic_conv_nhwc(x, hidden, weight, None, 7, 32)
    torch.testing.assert_close(
        out.double(), reference(x, hidden, weight, None, 7, 32),
        rtol=1e-4, atol=1e-4)


@needs_native
def test_module_native_equals_pytorch(monkeypatch):
    torch.manual_seed(2)
    conv = InhomogeneousDynamicConv2d(64, 7, i_dynamic_groups=32).eval()
    x = torch.randn(2, 64, 9, 12).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        out = conv(x)
        set_native(False)
        ref = conv(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@needs_native
def test_deployed_model_native_equals_pytorch(monkeypatch):
    torch.manual_seed(3)
    model = DWNet(arch=dict(channels=[32, 64, 128, 256], depths=[1, 1, 1, 1]),
                  conv_type='i_dynamic').eval()
    model.switch_to_deploy()
    x = torch.randn(2, 3, 64, 72)
    with torch.no_grad():
        outs = model(x)
        set_native(False)
        refs = model(x)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_unsupported_inputs_use_pytorch():
    supported = i_dynamic_module._runs_native
    assert not supported(torch.zeros(1, 4, 4, 32), 7, 4)
    assert not supported(torch.zeros(1, 4, 4, 12), 7, 12)
    assert not supported(torch.zeros(1, 4, 4, 32), 4, 32)
    # Few groups (the tests' small models): the module still works.
    conv = InhomogeneousDynamicConv2d(16, 7, i_dynamic_groups=4).eval()
    x = torch.randn(1, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert conv(x).shape == x.shape

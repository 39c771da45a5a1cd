"""The Triton I-Dynamic kernels (GPU) against fp64 PyTorch, on the CPU
through Triton's interpreter (``TRITON_INTERPRET=1``, set in a subprocess
before Triton is imported); on a GPU host also on CUDA."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip('triton')

CHECK = textwrap.dedent('''
    import copy
    import os
    import sys

    import torch
    from dwnet_mm.models.layers import InhomogeneousDynamicConv2d
    from dwnet_mm.models.layers.dynamic_conv import tap_major
    from dwnet_mm.ops import (backend_for, i_dynamic_conv_from_hidden,
                              set_triton,
                              triton_i_dynamic_conv,
                              triton_i_dynamic_conv_into)
    from dwnet_mm.ops.triton_i_dynamic_conv import TritonIDynamicConv

    device = sys.argv[1]

    def error(got, want):
        return ((got.double() - want).norm() / want.norm()).item()

    def reference(x, w, k):
        """fp64 PyTorch ops (the interpreter flag is off for CPU
        tensors only through dwnet_mm.ops.backend_for)."""
        B, G, k2, H, W = w.shape
        cols = torch.nn.functional.unfold(x.double().cpu(), k,
                                          padding=k // 2)
        cols = cols.view(B, G, -1, k2, H, W)
        return (cols * w.double().cpu().view(B, G, 1, k2, H, W)).sum(3) \\
            .view(x.shape)

    torch.manual_seed(0)
    # (B, C, G, H, W, k): 3 channels per group (padded to 4), one pixel
    # block with a partial end, several blocks, a 1x1 map.
    for B, C, G, H, W, k in [(2, 12, 4, 5, 7, 3), (1, 6, 2, 9, 4, 7),
                             (2, 8, 2, 19, 17, 5), (3, 4, 4, 1, 1, 3)]:
        x = torch.randn(B, C, H, W, device=device)
        w = torch.randn(B, G, k * k, H, W, device=device)
        go = torch.randn(B, C, H, W, device=device)
        xr = x.double().cpu().requires_grad_()
        wr = w.double().cpu().requires_grad_()
        ref = reference(xr, wr, k)
        ref_gx, ref_gw = torch.autograd.grad(ref, (xr, wr), go.double().cpu())
        xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = triton_i_dynamic_conv(xt, wt, k)
        out.backward(go)
        for name, got, want in [('out', out, ref), ('grad_x', xt.grad, ref_gx),
                                ('grad_w', wt.grad, ref_gw)]:
            e = error(got.cpu(), want)
            assert e < 1e-6, (B, C, G, H, W, k, name, e)
        # Only the weight's gradient: the x branch of the kernel is off.
        wt.grad = None
        triton_i_dynamic_conv(x, wt, k).backward(go)
        assert error(wt.grad.cpu(), ref_gw) < 1e-6
        scale, bias = torch.randn(C, device=device), torch.randn(C,
                                                                device=device)
        into = torch.full_like(x, float('nan'))
        triton_i_dynamic_conv_into(into, x, w, k, scale, bias)
        want = ref * scale.double().cpu().view(1, -1, 1, 1) + \\
            bias.double().cpu().view(1, -1, 1, 1)
        assert error(into.cpu(), want) < 1e-6

    # fp64 inputs are summed in fp64: gradcheck holds.
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, device=device,
                    requires_grad=True)
    w = torch.randn(1, 1, 9, 3, 4, dtype=torch.float64, device=device,
                    requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: TritonIDynamicConv.apply(a, b, 3, torch.float64),
        (x, w), fast_mode=True)

    # The layer dispatches to the kernels (training and inference forms):
    # output and every gradient as the fp64 layer on PyTorch ops.
    layer = InhomogeneousDynamicConv2d(16, 7, i_dynamic_groups=4).to(device)
    x = torch.randn(2, 16, 6, 9, device=device, requires_grad=True)
    go = torch.randn(2, 16, 6, 9, device=device)
    assert backend_for(x, triton=True) == 'triton'
    set_triton(False)
    layer64 = copy.deepcopy(layer).double()
    x64 = x.detach().double().requires_grad_()
    assert backend_for(x64, triton=True) != 'triton'
    want = layer64(x64)
    want.backward(go.double())
    set_triton(True)
    out = layer(x)
    out.backward(go)
    pairs = [('out', out, want), ('grad_x', x.grad, x64.grad)] + [
        (name, p.grad, p64.grad) for (name, p), p64 in zip(
            layer.named_parameters(), layer64.parameters())]
    for name, got, ref in pairs:
        if ref.norm() < 1e-9:  # conv1's bias, before a batch-stat BN
            assert got.norm() < 1e-5 * x64.grad.norm(), (name, got.norm())
            continue
        e = error(got.cpu(), ref.cpu())
        assert e < 1e-5, (name, e)
    layer.eval()
    layer64.eval()
    with torch.no_grad():
        set_triton(False)
        want = layer64(x64).cpu()
        set_triton(True)
        assert error(layer(x).cpu(), want) < 1e-5
        # The deploy form's call: interleaved channels, scale, bias, ReLU.
        x_nhwc = x.permute(0, 2, 3, 1)
        order = torch.arange(16, device=device).view(4, 4).t().reshape(-1)
        scale = torch.rand(16, device=device) + 0.5
        bias = torch.randn(16, device=device)
        hidden = layer.hidden_features(x_nhwc)
        weight, kernel_bias = tap_major(layer.conv2[0], 4)
        got = i_dynamic_conv_from_hidden(
            x_nhwc[..., order], hidden, weight, kernel_bias, 7, 4,
            scale[order], bias[order], relu=True, interleaved=True)
        set_triton(False)
        want = i_dynamic_conv_from_hidden(*(t.double().cpu() for t in (
            x_nhwc, hidden, weight, kernel_bias)), 7, 4,
            scale.double().cpu(), bias.double().cpu(), relu=True)
        set_triton(True)
        assert error(got.cpu(), want[..., order.cpu()]) < 1e-5
    if device == 'cuda':
        # Mixed precision: bf16 kernels, fp32 sums; the backward's GEMMs
        # under autocast too.
        layer.train()
        x.grad = None
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = layer(x)
        assert out.dtype == torch.bfloat16
        out.float().backward(go)
        assert x.grad.dtype == torch.float32
        assert torch.isfinite(x.grad).all()
    print('triton i_dynamic ok on', device)
''')


def _run_check(device, interpret):
    env = dict(os.environ)
    if interpret:
        env['TRITON_INTERPRET'] = '1'
    result = subprocess.run([sys.executable, '-c', CHECK, device], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'triton i_dynamic ok on {device}' in result.stdout


def test_triton_i_dynamic_interpreted_on_cpu():
    _run_check('cpu', interpret=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_triton_i_dynamic_on_cuda():
    _run_check('cuda', interpret=False)


def test_cpu_tensors_do_not_take_the_triton_path(monkeypatch):
    from dwnet_mm.ops import backend_for, set_native, set_triton
    x = torch.randn(1, 4, 3, 3)
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert backend_for(x, triton=True) != 'triton'
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert backend_for(x, triton=True) == 'triton'
    set_native(False)  # the CPU kernels only
    assert backend_for(x, triton=True) == 'triton'
    set_triton(False)
    assert backend_for(x, triton=True) == 'torch'


def test_triton_i_dynamic_rejects_a_wrong_weight_shape():
    from dwnet_mm.ops import triton_i_dynamic_conv
    with pytest.raises(ValueError, match=r'expected \(B, G, 9, H, W\)'):
        triton_i_dynamic_conv(torch.randn(1, 4, 3, 3),
                              torch.randn(1, 3, 9, 3, 3), 3)

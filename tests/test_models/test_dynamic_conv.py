import pytest
import torch
import torch.nn.functional as F

from dwnet_mm.models.layers import (DynamicDepthwiseConv2d,
                                    InhomogeneousDynamicConv2d)
from dwnet_mm.ops import i_dynamic_conv_with_kernels

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def naive_i_dynamic(x, weight, k):
    """Reference: explicit unfold, the formula of the paper."""
    B, C, H, W = x.shape
    G = weight.shape[1] // (k * k)
    cols = F.unfold(x, k, padding=k // 2).view(B, G, C // G, k * k, H, W)
    w = weight.view(B, G, 1, k * k, H, W)
    return (cols * w).sum(3).view(B, C, H, W)


def naive_dynamic(module, x):
    """Reference: one conv per image with its own predicted kernel."""
    kernels = module.predict_kernel(x).view(x.shape[0], x.shape[1], 1,
                                            module.kernel_size,
                                            module.kernel_size)
    outs = [
        F.conv2d(x[i:i + 1], kernels[i], module.bias,
                 padding=module.kernel_size // 2, groups=x.shape[1])
        for i in range(x.shape[0])
    ]
    return torch.cat(outs)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('shape,groups,k', [((2, 8, 5, 6), 4, 3),
                                            ((1, 6, 9, 4), 2, 7),
                                            ((3, 4, 3, 3), 4, 5)])
def test_i_dynamic_matches_naive(device, shape, groups, k):
    torch.manual_seed(0)
    x = torch.randn(*shape, device=device)
    w = torch.randn(shape[0], groups * k * k, *shape[2:], device=device)
    torch.testing.assert_close(
        i_dynamic_conv_with_kernels(x, w, k), naive_i_dynamic(x, w, k),
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
def test_i_dynamic_gradcheck(device):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, device=device,
                    requires_grad=True)
    w = torch.randn(2, 2 * 9, 4, 5, dtype=torch.float64, device=device,
                    requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: i_dynamic_conv_with_kernels(a, b, 3), (x, w))


def test_i_dynamic_gradients_match_naive():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 7, requires_grad=True)
    w = torch.randn(2, 4 * 49, 6, 7, requires_grad=True)
    g = torch.randn(2, 8, 6, 7)
    grads = torch.autograd.grad(
        (i_dynamic_conv_with_kernels(x, w, 7) * g).sum(), (x, w))
    ref = torch.autograd.grad((naive_i_dynamic(x, w, 7) * g).sum(), (x, w))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('device,dtype', [('cpu', torch.bfloat16)] + (
    [('cuda', torch.float16), ('cuda', torch.bfloat16)]
    if torch.cuda.is_available() else []))
def test_i_dynamic_under_autocast(device, dtype):
    torch.manual_seed(0)
    module = InhomogeneousDynamicConv2d(32, 7,
                                        i_dynamic_groups=8).to(device)
    x = torch.randn(2, 32, 9, 11, device=device, requires_grad=True)
    with torch.autocast(device_type=device, dtype=dtype):
        out = module(x)
    assert out.dtype == dtype
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    ref = module(x)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.1)


def test_i_dynamic_shape_errors():
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match='does not fit'):
        i_dynamic_conv_with_kernels(x, torch.randn(1, 10, 5, 5), 3)
    with pytest.raises(ValueError, match='groups'):
        i_dynamic_conv_with_kernels(x, torch.randn(1, 3 * 9, 5, 5), 3)
    with pytest.raises(ValueError, match='divisible'):
        InhomogeneousDynamicConv2d(20, i_dynamic_groups=8)


def test_i_dynamic_module_layout():
    module = InhomogeneousDynamicConv2d(96, 7, i_dynamic_groups=32)
    names = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert names['conv1.0.weight'] == (24, 96, 1, 1)
    assert names['conv1.0.bias'] == (24, )
    assert 'conv1.1.running_mean' in names
    assert names['conv2.0.weight'] == (49 * 32, 24, 1, 1)


@pytest.mark.parametrize('device', DEVICES)
def test_dynamic_matches_per_image_conv(device):
    torch.manual_seed(0)
    module = DynamicDepthwiseConv2d(16, 7).to(device).eval()
    module.bias.data.uniform_()
    x = torch.randn(3, 16, 10, 9, device=device)
    torch.testing.assert_close(module(x), naive_dynamic(module, x),
                               rtol=1e-5, atol=1e-5)


def test_dynamic_kernels_differ_per_image():
    torch.manual_seed(0)
    module = DynamicDepthwiseConv2d(8, 3).eval()
    x = torch.randn(2, 8, 6, 6)
    kernels = module.predict_kernel(x).view(2, 8, 3, 3)
    assert not torch.allclose(kernels[0], kernels[1])


def test_dynamic_module_layout():
    module = DynamicDepthwiseConv2d(96, 7)
    names = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert names['conv1.weight'] == (24, 96, 1, 1)
    assert 'conv1.bias' not in names
    assert names['conv2.weight'] == (96 * 49, 24, 1, 1)
    assert names['conv2.bias'] == (96 * 49, )
    assert names['bias'] == (96, )
    assert 'bn.running_var' in names

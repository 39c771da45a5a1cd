"""Depth-wise convolutions whose kernels are predicted from the input."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer


class DynamicDepthwiseConv2d(nn.Module):
    """Homogeneous dynamic depth-wise convolution (the paper's D-DW).

    One k x k kernel per channel and per image, predicted from the globally
    pooled input in the manner of SE: pool -> 1x1 conv (C -> C/r, no bias) ->
    norm -> ReLU -> 1x1 conv (C/r -> C*k*k). A learned static bias is added to
    the output. The whole batch runs as one grouped convolution.

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int): Size of the depth-wise kernel. Defaults to 7.
        reduction (int): Channel reduction of the kernel generator.
            Defaults to 4.
        norm_cfg (dict): Config of the generator's norm layer.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, kernel_size=7, reduction=4,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        hidden = channels // reduction
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = build_norm_layer(norm_cfg, hidden)[1]
        self.conv2 = nn.Conv2d(hidden, channels * kernel_size**2, 1)
        self.bias = nn.Parameter(torch.zeros(channels))

    def predict_kernel(self, x):
        """Per-image kernels of shape (B * C, 1, k, k)."""
        context = F.adaptive_avg_pool2d(x, 1)
        context = F.relu(self.bn(self.conv1(context)))
        kernel = self.conv2(context)
        return kernel.reshape(-1, 1, self.kernel_size, self.kernel_size)

    def forward(self, x):
        B, C, H, W = x.shape
        kernel = self.predict_kernel(x).to(x.dtype)
        # Fold the batch into the channels: one grouped conv for all images.
        out = F.conv2d(
            x.reshape(1, B * C, H, W),
            kernel,
            padding=self.kernel_size // 2,
            groups=B * C)
        out = out.reshape(B, C, H, W)
        return out + self.bias.to(out.dtype).view(1, C, 1, 1)


class InhomogeneousDynamicConvFunction(torch.autograd.Function):
    """Spatially varying depth-wise conv, one kernel per position and group.

    ``weight`` is (B, G, k*k, H, W). Both passes loop over the k*k kernel
    offsets, so neither materialises an unfolded (B, C, k*k, H, W) tensor.
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        k = math.isqrt(k2)
        pad = k // 2
        x_pad = _pad_groups(x, G, pad)
        out = x.new_zeros(B, G, C // G, H, W)
        for i in range(k2):
            dy, dx = divmod(i, k)
            out.addcmul_(x_pad[..., dy:dy + H, dx:dx + W], weight[:, :, i:i + 1])
        return out.view(B, C, H, W)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        k = math.isqrt(k2)
        pad = k // 2
        need_x, need_w = ctx.needs_input_grad[:2]
        g_out = grad_out.reshape(B, G, C // G, H, W)
        if need_x:
            grad_x_pad = x.new_zeros(B, G, C // G, H + 2 * pad, W + 2 * pad)
        if need_w:
            x_pad = _pad_groups(x, G, pad)
            grad_w = torch.empty_like(weight)
        for i in range(k2):
            dy, dx = divmod(i, k)
            if need_x:
                grad_x_pad[..., dy:dy + H, dx:dx + W].addcmul_(
                    g_out, weight[:, :, i:i + 1])
            if need_w:
                grad_w[:, :, i] = (g_out *
                                   x_pad[..., dy:dy + H, dx:dx + W]).sum(2)
        grad_x = grad_x_pad[..., pad:pad + H, pad:pad + W].reshape(
            B, C, H, W) if need_x else None
        return grad_x, grad_w if need_w else None


def _pad_groups(x, groups, pad):
    B, C, H, W = x.shape
    return F.pad(x, (pad, pad, pad, pad)).view(B, groups, C // groups,
                                               H + 2 * pad, W + 2 * pad)


def i_dynamic_conv_flop_handle(inputs, outputs):
    """mmengine FLOP (MAC) counter: k*k MACs per output element, like a
    static depth-wise conv."""
    from mmengine.analysis.jit_handles import get_shape
    x_shape, w_shape = get_shape(inputs[0]), get_shape(inputs[1])
    return math.prod(x_shape) * w_shape[2]


def inhomogeneous_dynamic_conv(x, weight, kernel_size):
    """Depth-wise conv with a kernel per position, shared by channel groups.

    ``out[n, c, h, w] = sum_{i, j} weight[n, g(c), i, j, h, w] *
    x[n, c, h + i - k // 2, w + j - k // 2]`` with zero padding, where the C
    channels form G contiguous groups.

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        weight (Tensor): Kernels of shape (B, G * k * k, H, W), laid out as
            (B, G, k, k, H, W).
        kernel_size (int): k.

    Returns:
        Tensor: Output of shape (B, C, H, W); in the autocast dtype under
        autocast, else in the promoted dtype of ``x`` and ``weight``.
    """
    B, C, H, W = x.shape
    k2 = kernel_size**2
    if weight.dim() != 4 or weight.shape[0] != B or weight.shape[1] % k2 \
            or weight.shape[2:] != x.shape[2:]:
        raise ValueError(
            f'weight of shape {tuple(weight.shape)} does not fit input '
            f'{tuple(x.shape)}: expected (B, G*{k2}, H, W)')
    if C % (weight.shape[1] // k2):
        raise ValueError(f'{C} channels cannot be split into '
                         f'{weight.shape[1] // k2} groups')
    # Behave like a conv under autocast (output in the autocast dtype), but
    # accumulate the k*k products of half inputs in fp32.
    device = x.device.type
    if torch.is_autocast_enabled(device):
        out_dtype = torch.get_autocast_dtype(device)
    else:
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
    compute_dtype = torch.float32 if out_dtype in (
        torch.float16, torch.bfloat16) else out_dtype
    weight = weight.reshape(B, -1, k2, H, W)
    out = InhomogeneousDynamicConvFunction.apply(
        x.to(compute_dtype).contiguous(),
        weight.to(compute_dtype).contiguous())
    return out.to(out_dtype)


class InhomogeneousDynamicConv2d(nn.Module):
    """Inhomogeneous dynamic depth-wise convolution (the paper's I-Dynamic).

    A k x k kernel is predicted at every position from the local features
    (1x1 conv C -> C/r -> norm -> ReLU -> 1x1 conv -> k*k*G) and shared by
    the channels of each of the G groups. Plain PyTorch: runs on any device
    and dtype, and is differentiable.

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int): Size of the kernel. Defaults to 7.
        groups (int): Number of channel groups sharing a kernel.
            Defaults to 32.
        reduction (int): Channel reduction of the kernel generator.
            Defaults to 4.
        norm_cfg (dict): Config of the generator's norm layer.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, kernel_size=7, groups=32, reduction=4,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        if channels % groups:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'groups ({groups})')
        self.kernel_size = kernel_size
        self.groups = groups
        hidden = channels // reduction
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            build_norm_layer(norm_cfg, hidden)[1],
            nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(
            nn.Conv2d(hidden, kernel_size**2 * groups, 1))

    def forward(self, x):
        weight = self.conv2(self.conv1(x))
        return inhomogeneous_dynamic_conv(x, weight, self.kernel_size)


def _register_flop_counter():
    # mmengine's FlopAnalyzer (used by mmdet/mmseg/mmpretrain get_flops
    # tools too) skips autograd Functions; teach it this one.
    from mmengine.analysis import complexity_analysis
    name = 'prim::PythonOp.' + InhomogeneousDynamicConvFunction.__name__
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[name] = \
        i_dynamic_conv_flop_handle


_register_flop_counter()

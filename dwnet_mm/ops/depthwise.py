"""Depth-wise convolution on NHWC tensors: :func:`depthwise_conv` (the op)
and the native CPU kernels (:func:`depthwise_conv_nhwc`)."""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .dispatch import apply_relu, exporting, needs_autograd
from .native import native_ops, native_ops_for

# Kernel sizes the C++ kernels are compiled for (odd: "same" padding).
NATIVE_KERNEL_SIZES = (3, 5, 7, 9)


def native_depthwise_supported(x, kernel_size):
    """Whether :func:`depthwise_conv_nhwc` runs natively for ``x``.

    Args:
        x (Tensor): (N, H, W, C) input.
        kernel_size (int): k.
    """
    # native_ops_for first: tracing sees no shape test.
    return native_ops_for(x) is not None and x.shape[-1] % 8 == 0 and \
        kernel_size in NATIVE_KERNEL_SIZES


def native_nhwc_view(x, kernel_size):
    """The (N, H, W, C) view of a channels-last (N, C, H, W) ``x`` when the
    native kernels can take it, else None."""
    nhwc = x.permute(0, 2, 3, 1)
    if x.is_contiguous(memory_format=torch.channels_last) and \
            native_depthwise_supported(nhwc, kernel_size):
        return nhwc
    return None


class DepthwiseConvNHWC(torch.autograd.Function):
    """Native depth-wise conv of (N, H, W, C) ``x`` with (k, k, C) or
    per-image (N, k, k, C) kernels and an optional (C, ) bias."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return native_ops().depthwise_conv_nhwc(x, weight, bias, relu)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        ops = native_ops()
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(-3, -2).contiguous()
            grad_x = ops.depthwise_conv_nhwc(grad, flipped, None, False)
        if ctx.needs_input_grad[1]:
            grad_weight = ops.depthwise_conv_nhwc_weight_grad(
                x, grad, weight.shape[-2], weight.dim() == 4)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 1, 2))
        return grad_x, grad_weight, grad_bias, None


def depthwise_conv_nhwc(x, weight, bias=None, relu=False):
    """Depth-wise conv with "same" zero padding on channels-last data.

    Check :func:`native_depthwise_supported` first: this always runs the
    native kernels.

    Args:
        x (Tensor): (N, H, W, C) input.
        weight (Tensor): (C, 1, k, k) kernels (an ``nn.Conv2d`` weight), or
            (N, C, k, k), one set per image.
        bias (Tensor, optional): (C, ) bias. Defaults to None.
        relu (bool): Apply ReLU to the output. Defaults to False.

    Returns:
        Tensor: (N, H, W, C), contiguous.
    """
    if weight.shape[1] == 1:  # C is a multiple of 8: never per-image
        C, _, k, _ = weight.shape
        kernels = weight.reshape(C, k * k).t().reshape(k, k, C)
    else:
        kernels = weight.permute(0, 2, 3, 1)
    kernels = kernels.contiguous()
    x = x.contiguous()
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, kernels, bias))
    if not needs_grad:
        return native_ops().depthwise_conv_nhwc(x, kernels, bias, relu)
    out = DepthwiseConvNHWC.apply(x, kernels, bias, False)
    return out.relu() if relu else out


def depthwise_conv(x, weight, bias=None, relu=False):
    """Static depth-wise conv with a "same" window, on NHWC tensors.

    ``out[n, h, w, c] = bias[c] + sum_{i, j} weight[c, 0, i, j] *
    x[n, h + i - k // 2, w + j - k // 2, c]`` (zero padding), then ReLU if
    ``relu``: even k keep the offsets -k//2 .. k//2-1 (PyTorch's conv with
    padding k // 2, cropped to H x W). In the native kernels where
    :func:`native_depthwise_supported` (not while exporting), else in
    PyTorch's conv on the channels-last NCHW view of ``x``.

    Args:
        x (Tensor): (N, H, W, C) input.
        weight (Tensor): (C, 1, k, k) kernels (an ``nn.Conv2d`` weight).
        bias (Tensor, optional): (C, ) bias. Defaults to None.
        relu (bool): Apply ReLU to the output. Defaults to False.

    Returns:
        Tensor: (N, H, W, C), NHWC-contiguous.
    """
    k = weight.shape[-1]
    if not exporting() and native_depthwise_supported(x, k):
        return depthwise_conv_nhwc(x, weight, bias, relu)
    H, W = x.shape[1:3]
    # The permuted NHWC tensor is a channels-last NCHW one: the conv runs
    # in PyTorch's NHWC kernels and returns channels-last memory.
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=k // 2,
                   groups=x.shape[-1])
    out = out[..., :H, :W].permute(0, 2, 3, 1)
    if relu:
        out = apply_relu(out, not exporting() and
                         not needs_autograd(x, weight, bias))
    return out.contiguous()

"""Depth-wise convs on NHWC tensors, "same" window: one kernel per channel
(:func:`depthwise_conv`) or per image and channel
(:func:`dynamic_depthwise_conv`).

The static conv runs in PyTorch's conv, whose channels-last kernels (oneDNN
on CPUs) take the NHWC memory as it is: the native kernels did not beat it
by 15% on DWNet-T in the benchmark (docs/speed.md). The dynamic conv
(:func:`.backend.backend_for`) runs in the native CPU kernels
(:class:`DepthwiseConvNative`), else in one grouped conv with the batch
folded into the channel groups, else, while exporting to ONNX, as k*k
shifted products (the group count would be fixed at export).
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .backend import backend_for, native_ops, needs_autograd
from .export import depthwise_conv_taps

# Kernel sizes the C++ kernels are compiled for (odd: "same" padding).
NATIVE_KERNEL_SIZES = (3, 5, 7, 9)


class DepthwiseConvNative(torch.autograd.Function):
    """Native depth-wise conv of (N, H, W, C) ``x`` with per-image
    (N, k, k, C) kernels and an optional (C, ) bias."""

    @staticmethod
    def forward(ctx, x, kernels, bias):
        ctx.save_for_backward(x, kernels)
        ctx.has_bias = bias is not None
        return native_ops().depthwise_conv_nhwc(x, kernels, bias, False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, kernels = ctx.saved_tensors
        ops = native_ops()
        grad = grad.contiguous()
        grad_x = grad_kernels = grad_bias = None
        if ctx.needs_input_grad[0]:
            flipped = kernels.flip(-3, -2).contiguous()
            grad_x = ops.depthwise_conv_nhwc(grad, flipped, None, False)
        if ctx.needs_input_grad[1]:
            grad_kernels = ops.depthwise_conv_nhwc_weight_grad(
                x, grad, kernels.shape[1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 1, 2))
        return grad_x, grad_kernels, grad_bias


def _native(x, kernels, bias, relu):
    """The native kernels on (N, k, k, C) ``kernels``."""
    x, kernels = x.contiguous(), kernels.contiguous()
    if not needs_autograd(x, kernels, bias):
        return native_ops().depthwise_conv_nhwc(x, kernels, bias, relu)
    out = DepthwiseConvNative.apply(x, kernels, bias)
    return F.relu(out) if relu else out


def _runs_native(x, kernel_size):
    return backend_for(x) == 'native' and x.shape[-1] % 8 == 0 and \
        kernel_size in NATIVE_KERNEL_SIZES


def depthwise_conv(x, weight, bias=None, relu=False):
    """Static depth-wise conv with a "same" window, on NHWC tensors.

    ``out[n, h, w, c] = bias[c] + sum_{i, j} weight[c, 0, i, j] *
    x[n, h + i - k // 2, w + j - k // 2, c]`` (zero padding), then ReLU if
    ``relu``; even k keep the offsets -k//2 .. k//2-1 (PyTorch's conv with
    padding k // 2, cropped to H x W).

    Args:
        x (Tensor): (N, H, W, C) input.
        weight (Tensor): (C, 1, k, k) kernels (an ``nn.Conv2d`` weight).
        bias (Tensor, optional): (C, ) bias. Defaults to None.
        relu (bool): Apply ReLU to the output. Defaults to False.

    Returns:
        Tensor: (N, H, W, C), NHWC-contiguous.
    """
    C, _, k, _ = weight.shape
    H, W = x.shape[1:3]
    # The permuted NHWC tensor is a channels-last NCHW one: the conv runs
    # in PyTorch's NHWC kernels and returns channels-last memory.
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=k // 2,
                   groups=C)
    out = out[..., :H, :W].permute(0, 2, 3, 1)
    return (F.relu(out) if relu else out).contiguous()


def dynamic_depthwise_conv(x, kernels, bias=None, relu=False):
    """Depth-wise conv with a kernel per image and channel, "same" window.

    ``out[n, h, w, c] = bias[c] + sum_{i, j} kernels[n, c, i, j] *
    x[n, h + i - k // 2, w + j - k // 2, c]`` (zero padding), then ReLU if
    ``relu``; even k keep the offsets -k//2 .. k//2-1. ``kernels`` and
    ``bias`` are cast to the dtype of ``x``.

    Args:
        x (Tensor): (N, H, W, C) input.
        kernels (Tensor): (N, C, k, k) kernels, or (N*C, 1, k, k).
        bias (Tensor, optional): (C, ) bias. Defaults to None.
        relu (bool): Apply ReLU to the output. Defaults to False.

    Returns:
        Tensor: (N, H, W, C), NHWC-contiguous.
    """
    N, H, W, C = x.shape
    k = kernels.shape[-1]
    kernels = kernels.to(x.dtype).reshape(N, C, k, k)
    if bias is not None:
        bias = bias.to(x.dtype)
    if _runs_native(x, k):
        return _native(x, kernels.permute(0, 2, 3, 1), bias, relu)
    if backend_for(x) == 'export':
        out = depthwise_conv_taps(
            x.permute(0, 3, 1, 2).reshape(N, C, 1, H, W),
            kernels.reshape(N, C, k * k, 1, 1), k, k // 2,
            (k - 1) // 2).view(N, C, H, W)
        if bias is not None:
            out = out + bias.view(1, C, 1, 1)
    else:
        out = _batch_folded_conv(x, kernels, bias)
    out = out[..., :H, :W].permute(0, 2, 3, 1)
    return (F.relu(out) if relu else out).contiguous()


def _batch_folded_conv(x, kernels, bias):
    """One grouped conv over the batch folded into the channels, through
    an (H, W, N*C) copy that is channels-last, so that it runs in the NHWC
    kernels. Returns (N, C, H', W')."""
    N, H, W, C = x.shape
    k = kernels.shape[-1]
    folded = x.permute(1, 2, 0, 3).reshape(1, H, W, N * C)
    out = F.conv2d(folded.permute(0, 3, 1, 2),
                   kernels.reshape(N * C, 1, k, k),
                   None if bias is None else bias.repeat(N), padding=k // 2,
                   groups=N * C)
    Ho, Wo = out.shape[-2:]
    return out.permute(0, 2, 3, 1).reshape(Ho, Wo, N, C).permute(2, 3, 0, 1)

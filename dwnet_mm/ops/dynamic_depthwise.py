"""The dynamic depth-wise conv: one k x k kernel per image and channel.

:func:`dynamic_depthwise_conv` is the op (NHWC in and out); it runs in the
native kernels (CPU, fp32), as k*k shifted products while exporting to
ONNX, in :class:`SmallMapBatchedDepthwiseConv` for small maps that need
gradients on CPUs, else as one grouped conv over the batch folded into the
channels (:func:`batched_depthwise_conv`).
"""
import torch
import torch.nn.functional as F

from .depthwise import depthwise_conv_nhwc, native_depthwise_supported
from .dispatch import apply_relu, exporting, needs_autograd
from .export import depthwise_conv_taps
from .flat_rows import column_mask, flat_rows

# Map sizes (H*W) up to which the CPU backward of the batched depth-wise
# conv is computed here: oneDNN's grouped-conv kernel gradient is slow for
# many small groups (B*C of them).
SMALL_MAP_ELEMENTS = 256


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
    if exporting():
        backend = 'taps'
    elif native_depthwise_supported(x, k):
        backend = 'native'
    elif x.device.type == 'cpu' and H * W <= SMALL_MAP_ELEMENTS and k % 2 \
            and needs_autograd(x, kernels, bias):
        backend = 'small_map'
    else:
        backend = 'grouped'
    if backend == 'native':
        return depthwise_conv_nhwc(x, kernels, bias, relu)
    if backend == 'taps':
        out = _taps(x.permute(0, 3, 1, 2), kernels, bias)
    else:
        kernel = kernels.reshape(N * C, 1, k, k)
        bias = None if bias is None else bias.repeat(N)
        function = SmallMapBatchedDepthwiseConv.apply \
            if backend == 'small_map' else batched_depthwise_conv
        out = function(x.permute(0, 3, 1, 2), kernel, bias, k // 2)
    out = out[..., :H, :W].permute(0, 2, 3, 1)
    if relu:
        out = apply_relu(out, backend == 'grouped' and not needs_autograd(
            x, kernels, bias))
    return out.contiguous()


def _taps(x, kernels, bias):
    # ONNX's Conv needs its group count (N * C) fixed at export.
    N, C, H, W = x.shape
    k = kernels.shape[-1]
    out = depthwise_conv_taps(x.reshape(N, C, 1, H, W),
                              kernels.reshape(N, C, k * k, 1, 1), k, k // 2,
                              (k - 1) // 2).flatten(1, 2)
    return out if bias is None else out + bias.view(1, C, 1, 1)


def batched_depthwise_conv(x, kernel, bias, padding):
    """Depth-wise conv with a different kernel for every image, as one
    grouped conv (no export form: see :func:`dynamic_depthwise_conv`).

    The batch is folded into the channels. For a channels-last input the
    fold goes through an (H, W, B, C) copy that is itself channels-last, so
    the conv runs in the fast NHWC kernels and the output comes back
    channels-last.

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        kernel (Tensor): Kernels of shape (B * C, 1, k, k).
        bias (Tensor, optional): Bias of shape (B * C, ).
        padding (int): Zero padding.

    Returns:
        Tensor: (B, C, H', W'), channels-last when ``x`` is.
    """
    B, C, H, W = x.shape
    if x.is_contiguous() or not x.is_contiguous(
            memory_format=torch.channels_last):
        out = F.conv2d(
            x.reshape(1, B * C, H, W), kernel, bias, padding=padding,
            groups=B * C)
        return out.view(B, C, *out.shape[-2:])
    folded = x.permute(2, 3, 0, 1).reshape(1, H, W, B * C)
    out = F.conv2d(
        folded.permute(0, 3, 1, 2), kernel, bias, padding=padding,
        groups=B * C)
    Ho, Wo = out.shape[-2:]
    out = out.permute(0, 2, 3, 1).reshape(Ho, Wo, B, C)
    return out.permute(2, 3, 0, 1).contiguous(
        memory_format=torch.channels_last)


class SmallMapBatchedDepthwiseConv(torch.autograd.Function):
    """:func:`batched_depthwise_conv` ("same" padding, odd k) with its own
    backward: the input gradient is the forward conv with flipped kernels,
    the kernel gradient sums shifted products on flat rows (see
    :mod:`dwnet_mm.ops.flat_rows`)."""

    @staticmethod
    def forward(ctx, x, kernel, bias, padding):
        if 2 * padding + 1 != kernel.shape[-1]:
            raise ValueError('SmallMapBatchedDepthwiseConv needs "same" '
                             'padding (kernel_size // 2)')
        ctx.save_for_backward(x, kernel)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return batched_depthwise_conv(x, kernel, bias, padding)

    @staticmethod
    def backward(ctx, grad):
        x, kernel = ctx.saved_tensors
        grad_x = grad_kernel = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = batched_depthwise_conv(grad, kernel.flip(-1, -2), None,
                                            ctx.padding)
        if ctx.needs_input_grad[1]:
            grad_kernel = _kernel_grad(x, grad, kernel.shape[-1],
                                       ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((2, 3)).flatten()
        return grad_x, grad_kernel, grad_bias, None


def _kernel_grad(x, grad, k, padding):
    """(B*C, 1, k, k) kernel gradient, one shifted product per tap."""
    B, C, H, W = x.shape
    n = H * W
    flat = flat_rows(x, 1, padding).view(B * C, -1)
    g = grad.contiguous().view(B * C, H, W)
    mask = column_mask(k, W, g)
    grad_kernel = g.new_empty(B * C, k * k)
    masked = torch.empty_like(g)
    product = g.new_empty(B * C, n)
    for dx in range(k):
        # Taps that leave the row read the neighbouring row.
        torch.mul(g, mask[dx], out=masked)
        for dy in range(k):
            start = dy * W + dx
            torch.mul(masked.view(B * C, n), flat[:, start:start + n],
                      out=product)
            torch.sum(product, 1, out=grad_kernel[:, dy * k + dx])
    return grad_kernel.view(B * C, 1, k, k)

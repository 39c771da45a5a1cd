"""Depth-wise convolutions whose kernels are predicted from the input."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from dwnet_mm.ops import (depthwise_conv_nhwc, depthwise_conv_taps,
                          i_dynamic_conv_nhwc, onnx_exporting,
                          native_i_dynamic_supported, native_nhwc_view,
                          small_batch_linear,
                          triton_i_dynamic_conv,
                          triton_i_dynamic_conv_from_features,
                          triton_i_dynamic_conv_into,
                          triton_i_dynamic_supported)


def batched_depthwise_conv(x, kernel, bias, padding):
    """Depth-wise conv with a different kernel for every image.

    The batch is folded into the channels, so the whole batch runs as one
    grouped convolution. For a channels-last input (the layout of the DWNet
    blocks) the fold goes through an (H, W, B, C) copy that is itself
    channels-last, so the conv runs in the fast NHWC kernels and the output
    comes back channels-last.

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        kernel (Tensor): Kernels of shape (B * C, 1, k, k).
        bias (Tensor, optional): Bias of shape (B * C, ).
        padding (int): Zero padding.

    Returns:
        Tensor: (B, C, H', W'), channels-last when ``x`` is.
    """
    B, C, H, W = x.shape
    if onnx_exporting():
        # ONNX's Conv needs its group count (B * C) fixed at export.
        k = kernel.shape[-1]
        out = depthwise_conv_taps(
            x.reshape(B, C, 1, H, W), kernel.reshape(B, C, k * k, 1, 1), k,
            padding, padding).flatten(1, 2)
        return out if bias is None else out + bias.view(B, C, 1, 1)
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


class DynamicDepthwiseConv2d(nn.Module):
    """Homogeneous dynamic depth-wise convolution (the paper's D-DW).

    One k x k kernel per channel and per image, predicted from the globally
    pooled input in the manner of SE: pool -> 1x1 conv (C -> C/r, no bias) ->
    norm -> ReLU -> 1x1 conv (C/r -> C*k*k). A learned static bias is added to
    the output. The whole batch runs as one grouped convolution (see
    :func:`batched_depthwise_conv`).

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
        # The 1x1 convs of a 1x1 map as matmuls of one row per image (the
        # conv kernels would take a slow generic path).
        context = F.adaptive_avg_pool2d(x, 1).flatten(1)
        context = small_batch_linear(context, self.conv1.weight.flatten(1),
                                     self.conv1.bias)
        context = F.relu(self.bn(context[..., None, None])).flatten(1)
        kernel = small_batch_linear(context, self.conv2.weight.flatten(1),
                                    self.conv2.bias)
        return kernel.reshape(-1, 1, self.kernel_size, self.kernel_size)

    def forward(self, x):
        kernel = self.predict_kernel(x).to(x.dtype)
        nhwc = native_nhwc_view(x, self.kernel_size)
        if nhwc is not None:
            k = self.kernel_size
            kernel = kernel.view(x.shape[0], self.channels, k, k)
            return depthwise_conv_nhwc(nhwc, kernel, self.bias.to(
                x.dtype)).permute(0, 3, 1, 2)
        bias = self.bias.to(x.dtype).repeat(x.shape[0])
        padding = self.kernel_size // 2
        H, W = x.shape[-2:]
        if x.device.type == 'cpu' and H * W <= SMALL_MAP_ELEMENTS and \
                self.kernel_size % 2 and _needs_grad(x, kernel):
            return SmallMapBatchedDepthwiseConv.apply(x, kernel, bias,
                                                      padding)
        return batched_depthwise_conv(x, kernel, bias, padding)


# Map sizes (H*W) up to which the CPU backward of the batched depth-wise
# conv is computed here: oneDNN's grouped-conv kernel gradient is slow for
# many small groups (B*C of them).
SMALL_MAP_ELEMENTS = 256


class SmallMapBatchedDepthwiseConv(torch.autograd.Function):
    """:func:`batched_depthwise_conv` ("same" padding) with its own backward:
    the input gradient is the forward conv with flipped kernels, the kernel
    gradient sums shifted products on flat rows (see :func:`_flat_rows`).
    """

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
        B, C, H, W = x.shape
        k, n = kernel.shape[-1], H * W
        grad_x = grad_kernel = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = batched_depthwise_conv(grad, kernel.flip(-1, -2), None,
                                            ctx.padding)
        if ctx.needs_input_grad[1]:
            flat = _flat_rows(x, 1, ctx.padding).view(B * C, -1)
            g = grad.contiguous().view(B * C, H, W)
            mask = _column_mask(k, W, g)
            grad_kernel = g.new_empty(B * C, k * k)
            masked = torch.empty_like(g)
            product = g.new_empty(B * C, n)
            for dx in range(k):
                # Taps that leave the row read the neighbouring row.
                torch.mul(g, mask[dx], out=masked)
                for dy in range(k):
                    start = dy * W + dx
                    torch.mul(masked.view(B * C, n),
                              flat[:, start:start + n], out=product)
                    torch.sum(product, 1, out=grad_kernel[:, dy * k + dx])
            grad_kernel = grad_kernel.view(B * C, 1, k, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((2, 3)).flatten()
        return grad_x, grad_kernel, grad_bias, None


# The k*k passes of the inhomogeneous dynamic conv run on "flat rows":
# every (H, W) plane is padded by k // 2 rows above and below (but not on
# the sides) and flattened, with k // 2 guard elements at both ends. A
# horizontal shift is then a shift of the flat index, so every pass is one
# long contiguous run per plane (a 1-D shift of the whole row chunk) rather
# than W-long runs. Taps that cross the left/right border read the
# neighbouring row there; their kernel values are masked to zero instead.


def _flat_rows(x, groups, pad, scale=None):
    """``x`` (B, C, H, W), any memory format, as zero-padded flat rows
    (B, G, C // G, (H + 2 pad) * W + 2 pad), optionally times a per-channel
    ``scale`` in the same pass."""
    B, C, H, W = x.shape
    length = (H + 2 * pad) * W + 2 * pad
    flat = x.new_empty(B, C, length)
    inner = pad + pad * W
    flat[..., :inner].zero_()
    flat[..., inner + H * W:].zero_()
    interior = flat[..., inner:inner + H * W].view(B, C, H, W)
    if scale is None:
        interior.copy_(x)
    else:
        torch.mul(x, scale.view(1, C, 1, 1), out=interior)
    return flat.view(B, groups, C // groups, length)


def _flat_interior(flat, pad, H, W):
    """The (B, C, H, W) interior of flat rows."""
    B, G, Cg = flat.shape[:3]
    inner = pad + pad * W
    return flat[..., inner:inner + H * W].reshape(B, G * Cg, H, W)


def _column_mask(kernel_size, width, like):
    """(k, W): 1 where the horizontal tap ``dx`` of column ``w`` stays
    inside the row."""
    pad = kernel_size // 2
    cols = torch.arange(width, device=like.device)
    taps = torch.arange(kernel_size, device=like.device).view(-1, 1) - pad
    return ((cols + taps >= 0) & (cols + taps < width)).to(like.dtype)


def _masked(kernels, mask, inplace=False):
    """Kernels (B, G, k*k, r, W) times the column mask, as (B, G, k*k, r*W).
    """
    B, G, k2, r, W = kernels.shape
    k = mask.shape[0]
    mask = mask.view(1, 1, 1, k, 1, W)
    if inplace:
        kernels.view(B, G, k, k, r, W).mul_(mask)
        return kernels.view(B, G, k2, r * W)
    return (kernels.reshape(B, G, k, k, r, W) * mask).view(B, G, k2, r * W)


def _accumulate_offsets(out, flat, kernels, row0, width, kernel_size,
                        bias=None):
    """``out = bias + sum_i flat[offset i] * kernels[:, :, i]`` over the row
    chunk that starts at row ``row0``.

    Args:
        out (Tensor): (B, G, C/G, n) output view (n = rows * W),
            overwritten.
        flat (Tensor): (B, G, C/G, L) input as flat rows.
        kernels (Tensor): (B, G, k*k, n) column-masked kernels.
        row0 (int): First output row of the chunk.
        width (int): W.
        kernel_size (int): k.
        bias (Tensor, optional): Broadcastable to ``out``.
    """
    n = out.shape[-1]
    for i in range(kernel_size**2):
        dy, dx = divmod(i, kernel_size)
        start = (row0 + dy) * width + dx
        window, weight = flat[..., start:start + n], kernels[:, :, i:i + 1]
        if i:
            out.addcmul_(window, weight)
        elif bias is None:
            torch.mul(window, weight, out=out)
        else:
            torch.addcmul(bias, window, weight, out=out)


class InhomogeneousDynamicConvFunction(torch.autograd.Function):
    """Spatially varying depth-wise conv, one kernel per position and group.

    ``weight`` is (B, G, k*k, H, W), contiguous, with the taps that leave
    the row already masked to zero (:func:`_column_mask`, passed as
    ``mask``); the gradient of those taps is returned as zero. Both passes
    loop over the k*k kernel offsets on flat rows (see :func:`_flat_rows`),
    so neither materialises an unfolded (B, C, k*k, H, W) tensor and every
    pass is one long contiguous loop per (image, channel).
    """

    @staticmethod
    def forward(ctx, x, weight, mask):
        ctx.save_for_backward(x, weight, mask)
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        k = math.isqrt(k2)
        flat = _flat_rows(x, G, k // 2)
        out = x.new_empty(B, G, C // G, H * W)
        _accumulate_offsets(out, flat, weight.view(B, G, k2, H * W), 0, W, k)
        return out.view(B, C, H, W)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mask = ctx.saved_tensors
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        Cg, n = C // G, H * W
        k = math.isqrt(k2)
        pad = k // 2
        need_x, need_w = ctx.needs_input_grad[:2]
        g_out = grad_out.contiguous().view(B, G, Cg, n)
        kernels = weight.view(B, G, k2, n)
        grad_flat = grad_w = flat = product = None
        if need_x:
            grad_flat = x.new_zeros(B, G, Cg, (H + 2 * pad) * W + 2 * pad)
        if need_w:
            flat = _flat_rows(x, G, pad)
            grad_w = torch.empty_like(weight)
            grad_w_flat = grad_w.view(B, G, k2, n)
            if Cg > 4:
                product = g_out.new_empty(g_out.shape)
        for i in range(k2):
            dy, dx = divmod(i, k)
            start = dy * W + dx
            if need_x:
                grad_flat[..., start:start + n].addcmul_(
                    g_out, kernels[:, :, i:i + 1])
            if not need_w:
                continue
            window, target = flat[..., start:start + n], grad_w_flat[:, :, i]
            if product is None:
                # Few channels per group: sum the products directly.
                torch.mul(g_out[:, :, 0], window[:, :, 0], out=target)
                for c in range(1, Cg):
                    target.addcmul_(g_out[:, :, c], window[:, :, c])
            else:
                torch.mul(g_out, window, out=product)
                torch.sum(product, 2, out=target)
        if need_w:
            _masked(grad_w, mask, inplace=True)
        grad_x = _flat_interior(grad_flat, pad, H, W) if need_x else None
        return grad_x, grad_w, None


def i_dynamic_conv_flop_handle(inputs, outputs):
    """mmengine FLOP (MAC) counter: k*k MACs per output element, like a
    static depth-wise conv."""
    from mmengine.analysis.jit_handles import get_shape
    x_shape, w_shape = get_shape(inputs[0]), get_shape(inputs[1])
    return math.prod(x_shape) * w_shape[2]


def _i_dynamic_dtypes(x, weight):
    """Output and compute dtypes: behave like a conv under autocast (output
    in the autocast dtype), but accumulate the k*k products in fp32."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        out_dtype = torch.get_autocast_dtype(device)
    else:
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
    compute_dtype = torch.float32 if out_dtype in (
        torch.float16, torch.bfloat16) else out_dtype
    return out_dtype, compute_dtype


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
    out_dtype, compute_dtype = _i_dynamic_dtypes(x, weight)
    if onnx_exporting():
        # Standard ops, not the autograd Function or the Triton kernel.
        G, k = weight.shape[1] // k2, kernel_size
        out = depthwise_conv_taps(
            x.reshape(B, G, C // G, H, W).to(compute_dtype),
            weight.reshape(B, G, k2, H, W).to(compute_dtype), k, k // 2,
            (k - 1) // 2)
        return out.reshape(B, C, H, W).to(out_dtype)
    if triton_i_dynamic_supported(x):
        return triton_i_dynamic_conv(
            x, weight.reshape(B, -1, k2, H, W), kernel_size, out_dtype)
    weight = weight.to(compute_dtype)
    mask = _column_mask(kernel_size, W, weight)
    weight = _masked(weight.reshape(B, -1, k2, H, W), mask)
    return _apply_masked(x, weight.view(B, -1, k2, H, W), mask, out_dtype)


def _apply_masked(x, weight, mask, out_dtype):
    """The autograd op on column-masked (B, G, k*k, H, W) kernels, in their
    dtype."""
    out = InhomogeneousDynamicConvFunction.apply(
        x.to(weight.dtype).contiguous(), weight.contiguous(), mask)
    return out.to(out_dtype)


def _image_row_chunks(batch, height, image_elements, row_elements, budget):
    """(b0, b1, r0, r1) chunks: whole images while ``budget`` elements hold
    at least one, else about equal row chunks of single images."""
    if image_elements <= budget:
        images = budget // image_elements
        return [(b, min(batch, b + images), 0, height)
                for b in range(0, batch, images)]
    num_chunks = -(-height // max(1, budget // row_elements))
    rows = -(-height // num_chunks)
    return [(b, b + 1, r, min(height, r + rows)) for b in range(batch)
            for r in range(0, height, rows)]


@torch.no_grad()
def generate_and_apply_i_dynamic(x, hidden, weight, bias, kernel_size,
                                 groups, input_scale=None, out_bias=None):
    """Inference form of the inhomogeneous dynamic conv, without autograd.

    The kernels are generated from ``hidden`` by the last 1x1 conv of the
    generator (``weight``, ``bias``) one chunk of images (or of rows of an
    image) at a time and applied at once, so the (B, G*k*k, H, W) kernel
    tensor, G*k*k/C times larger than the input (16x at the first stage of
    DWNet-T), is never held whole: a chunk holds at most as many elements as
    the input (or one row), and only the chunk's images are copied to padded
    rows. On GPUs (Triton) the chunks are whole images (at least one).

    Args:
        x (Tensor): Input (B, C, H, W), any memory format.
        hidden (Tensor): Generator features (B, H, W, C_h), channels last.
        weight (Tensor): Last generator layer, (G*k*k, C_h).
        bias (Tensor, optional): Its bias, (G*k*k, ).
        kernel_size (int): k.
        groups (int): G.
        input_scale (Tensor, optional): (C, ) factors of the input of the
            kernel application (not of ``hidden``). Defaults to None.
        out_bias (Tensor, optional): (C, ) bias added to the output.
            Defaults to None.

    Returns:
        Tensor: (B, C, H, W), contiguous, in the dtype rules of
        :func:`inhomogeneous_dynamic_conv`.
    """
    B, C, H, W = x.shape
    k = kernel_size
    k2 = k**2
    out_dtype, dtype = _i_dynamic_dtypes(x, weight)
    if triton_i_dynamic_supported(x):
        return _generate_and_apply_triton(x, hidden, weight, bias, k, groups,
                                          input_scale, out_bias, out_dtype,
                                          dtype)
    if input_scale is not None:
        input_scale = input_scale.to(dtype)
    if out_bias is not None:
        out_bias = out_bias.to(dtype).view(1, groups, -1, 1)
    hidden = hidden.to(dtype).reshape(B, H * W, -1)
    weight = weight.to(dtype)
    if bias is not None:
        # The bias as one more input column of a ones feature: the GEMM
        # adds it, with no pass of its own.
        weight = torch.cat([weight, bias.to(dtype).view(-1, 1)], 1)
    mask = _column_mask(k, W, weight)
    out = x.new_empty(B, groups, C // groups, H * W, dtype=dtype)
    chunks = _image_row_chunks(B, H, groups * k2 * H * W, groups * k2 * W,
                               max(x.numel(), groups * k2 * W))
    buffer = x.new_empty(
        max((b1 - b0) * (r1 - r0) for b0, b1, r0, r1 in chunks) * W *
        groups * k2,
        dtype=dtype)
    flat, flat_images = None, None
    for b0, b1, r0, r1 in chunks:
        b, r = b1 - b0, r1 - r0
        if flat_images != (b0, b1):
            # Padded rows of the chunk's images only: on small maps the
            # padding doubles the size of the copy. The last chunk's rows
            # go before the new ones are allocated.
            flat = None
            flat = _flat_rows(x[b0:b1].to(dtype), groups, k // 2,
                              input_scale)
            flat_images = (b0, b1)
        n = r * W
        features = hidden[b0:b1, r0 * W:r1 * W].reshape(b * n, -1)
        if bias is not None:
            features = torch.cat([features, features.new_ones(b * n, 1)], 1)
        # One GEMM for the chunk, kernels laid out (G, k*k, b, n), written
        # into the same buffer for every chunk.
        kernels = buffer[:groups * k2 * b * n].view(groups * k2, b * n)
        torch.mm(weight, features.t(), out=kernels)
        kernels.view(groups, k, k, b, r, W).mul_(mask.view(1, 1, k, 1, 1, W))
        _accumulate_offsets(out[b0:b1, ..., r0 * W:r1 * W], flat,
                            kernels.view(groups, k2, b, n).permute(2, 0, 1, 3),
                            r0, W, k, out_bias)
    return out.view(B, C, H, W).to(out_dtype)


def _generate_and_apply_triton(x, hidden, weight, bias, k, groups,
                               input_scale, out_bias, out_dtype, dtype):
    """:func:`generate_and_apply_i_dynamic` on a GPU: the kernels of a few
    whole images at a time (as many elements as the input, or one image),
    applied by the Triton kernel with the scale and bias."""
    B, C, H, W = x.shape
    k2 = k * k
    images = max(1, x.numel() // (groups * k2 * H * W))
    hidden = hidden.to(dtype).reshape(B, H * W, -1).transpose(1, 2)
    weight = weight.to(dtype)
    out = x.new_empty(x.shape, dtype=out_dtype)
    for b0 in range(0, B, images):
        b1 = min(B, b0 + images)
        # (G*k*k, C_h) @ (b, C_h, HW): the (b, G, k*k, H, W) layout.
        kernels = torch.matmul(weight, hidden[b0:b1])
        if bias is not None:
            kernels += bias.to(kernels.dtype).view(-1, 1)
        triton_i_dynamic_conv_into(
            out[b0:b1], x[b0:b1], kernels.view(b1 - b0, groups, k2, H, W),
            k, input_scale, out_bias)
    return out


def i_dynamic_conv_from_hidden(x, hidden, weight, bias, kernel_size,
                               groups):
    """Differentiable form of :func:`generate_and_apply_i_dynamic` (without
    its scale and bias): all kernels are generated, then applied.

    Args:
        x (Tensor): Input (B, C, H, W).
        hidden (Tensor): Generator features (B, H, W, C_h).
        weight (Tensor): Last generator layer, (G*k*k, C_h).
        bias (Tensor, optional): Its bias, (G*k*k, ).
        kernel_size (int): k.
        groups (int): G.
    """
    B, H, W, _ = hidden.shape
    k = kernel_size
    out_dtype, dtype = _i_dynamic_dtypes(x, weight)
    features = hidden.to(dtype).reshape(B, H * W, -1)
    weight = weight.to(dtype)
    if bias is not None:
        # The bias as the weight of a ones feature: added by the GEMM.
        features = torch.cat([features, features.new_ones(B, H * W, 1)], 2)
        weight = torch.cat([weight, bias.to(dtype).view(-1, 1)], 1)
    if triton_i_dynamic_supported(x):
        return triton_i_dynamic_conv_from_features(x, features, weight, k,
                                                   groups, out_dtype)
    # (B, G*k*k, C_h) @ (B, C_h, HW): kernels come out in the (B, G, k*k,
    # H, W) layout of the op, with no transposing copy.
    kernels = torch.bmm(weight.expand(B, -1, -1), features.transpose(1, 2))
    mask = _column_mask(k, W, kernels)
    with torch.no_grad():
        # In place, outside autograd: the op zeroes the masked taps'
        # gradient itself, and the GEMM's backward does not need its output.
        _masked(kernels.view(B, groups, k * k, H, W), mask, inplace=True)
    return _apply_masked(x, kernels.view(B, groups, k * k, H, W), mask,
                         out_dtype)


def _needs_grad(*tensors):
    """Whether autograd records a graph for these tensors. Never while
    exporting to ONNX: the exporter cannot trace into autograd Functions,
    and the graph it records is for inference."""
    if onnx_exporting():
        return False
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class InhomogeneousDynamicConv2d(nn.Module):
    """Inhomogeneous dynamic depth-wise convolution (the paper's I-Dynamic).

    A k x k kernel is predicted at every position from the local features
    (1x1 conv C -> C/r -> norm -> ReLU -> 1x1 conv -> k*k*G) and shared by
    the channels of each of the G groups. Runs on any device and dtype, and
    is differentiable. Without gradients, the kernels are generated and
    applied chunk by chunk, which bounds the memory: in the native CPU kernel
    (:func:`dwnet_mm.ops.i_dynamic_conv_nhwc`) for channels-last fp32 CPU
    inputs, else in :func:`generate_and_apply_i_dynamic`. On GPUs the
    kernels are applied by a Triton kernel
    (:mod:`dwnet_mm.ops.triton_i_dynamic_conv`), and in training they are
    generated again in the backward rather than kept.

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

    def hidden_features(self, x):
        """Generator features after norm and ReLU, (B, H, W, C/r)."""
        conv, norm, act = self.conv1
        hidden = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1),
                          conv.bias)
        return act(norm(hidden.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)

    def forward(self, x):
        if torch.jit.is_tracing() or onnx_exporting():
            # The plain module form, for mmengine's FLOP counter and ONNX
            # (the op takes its export form there).
            weight = self.conv2(self.conv1(x))
            return inhomogeneous_dynamic_conv(x, weight, self.kernel_size)
        hidden = self.hidden_features(x)
        conv2 = self.conv2[0]
        weight = conv2.weight.flatten(1)
        if not _needs_grad(x, hidden, weight, conv2.bias):
            nhwc = native_nhwc_view(x, self.kernel_size)
            if nhwc is not None and native_i_dynamic_supported(
                    nhwc, self.kernel_size, self.groups):
                return i_dynamic_conv_nhwc(
                    nhwc, hidden, weight, conv2.bias, self.kernel_size,
                    self.groups).permute(0, 3, 1, 2)
            return generate_and_apply_i_dynamic(x, hidden, weight, conv2.bias,
                                                self.kernel_size, self.groups)
        return i_dynamic_conv_from_hidden(x, hidden, weight, conv2.bias,
                                          self.kernel_size, self.groups)


def _register_flop_counter():
    # mmengine's FlopAnalyzer (used by mmdet/mmseg/mmpretrain get_flops
    # tools too) skips autograd Functions; teach it this one.
    from mmengine.analysis import complexity_analysis
    name = 'prim::PythonOp.' + InhomogeneousDynamicConvFunction.__name__
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[name] = \
        i_dynamic_conv_flop_handle


_register_flop_counter()

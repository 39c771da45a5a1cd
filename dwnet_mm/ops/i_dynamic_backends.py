"""The PyTorch and Triton forms of the inhomogeneous dynamic (I-Dynamic)
depth-wise conv, on NCHW tensors: the differentiable op on given kernels
(:func:`inhomogeneous_dynamic_conv`), the differentiable op on generator
features (:func:`i_dynamic_conv_from_hidden`) and the chunked inference form
(:func:`generate_and_apply_i_dynamic`). :func:`.i_dynamic_conv.i_dynamic_conv`
chooses among them and the native kernels.
"""
import math

import torch

from .dispatch import exporting
from .export import depthwise_conv_taps
from .flat_rows import (accumulate_offsets, column_mask, flat_interior,
                        flat_rows, masked_kernels)
from .triton_i_dynamic_conv import (triton_i_dynamic_conv,
                                    triton_i_dynamic_conv_from_features,
                                    triton_i_dynamic_conv_into,
                                    triton_i_dynamic_supported)


class InhomogeneousDynamicConvFunction(torch.autograd.Function):
    """Spatially varying depth-wise conv, one kernel per position and group.

    ``weight`` is (B, G, k*k, H, W), contiguous, with the taps that leave
    the row already masked to zero (:func:`.flat_rows.column_mask`, passed
    as ``mask``); the gradient of those taps is returned as zero. Both
    passes loop over the k*k kernel offsets on flat rows (see
    :mod:`.flat_rows`), so neither materialises an unfolded (B, C, k*k, H,
    W) tensor and every pass is one long contiguous loop per (image,
    channel).
    """

    @staticmethod
    def forward(ctx, x, weight, mask):
        ctx.save_for_backward(x, weight, mask)
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        k = math.isqrt(k2)
        flat = flat_rows(x, G, k // 2)
        out = x.new_empty(B, G, C // G, H * W)
        accumulate_offsets(out, flat, weight.view(B, G, k2, H * W), 0, W, k)
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
            flat = flat_rows(x, G, pad)
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
            masked_kernels(grad_w, mask, inplace=True)
        grad_x = flat_interior(grad_flat, pad, H, W) if need_x else None
        return grad_x, grad_w, None


def i_dynamic_dtypes(x, weight):
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
    out_dtype, compute_dtype = i_dynamic_dtypes(x, weight)
    if exporting():
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
    mask = column_mask(kernel_size, W, weight)
    weight = masked_kernels(weight.reshape(B, -1, k2, H, W), mask)
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
    out_dtype, dtype = i_dynamic_dtypes(x, weight)
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
    mask = column_mask(k, W, weight)
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
            flat = flat_rows(x[b0:b1].to(dtype), groups, k // 2,
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
        accumulate_offsets(out[b0:b1, ..., r0 * W:r1 * W], flat,
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

    Returns:
        Tensor: (B, C, H, W), contiguous, in the dtype rules of
        :func:`inhomogeneous_dynamic_conv`.
    """
    B, H, W, _ = hidden.shape
    k = kernel_size
    out_dtype, dtype = i_dynamic_dtypes(x, weight)
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
    mask = column_mask(k, W, kernels)
    with torch.no_grad():
        # In place, outside autograd: the op zeroes the masked taps'
        # gradient itself, and the GEMM's backward does not need its output.
        masked_kernels(kernels.view(B, groups, k * k, H, W), mask,
                       inplace=True)
    return _apply_masked(x, kernels.view(B, groups, k * k, H, W), mask,
                         out_dtype)

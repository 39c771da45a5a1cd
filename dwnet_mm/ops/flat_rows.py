"""Flat rows: the layout the PyTorch forms of the dynamic convs loop on.

Every (H, W) plane is padded by k // 2 rows above and below (but not on the
sides) and flattened, with k // 2 guard elements at both ends. A horizontal
shift is then a shift of the flat index, so each of the k*k passes over the
kernel taps is one long contiguous run per plane (a 1-D shift of the whole
row chunk) rather than W-long runs. Taps that cross the left/right border
read the neighbouring row there; their kernel values are masked to zero
instead (:func:`column_mask`).
"""
import torch


def flat_rows(x, groups, pad, scale=None):
    """``x`` as zero-padded flat rows.

    Args:
        x (Tensor): (B, C, H, W) input, any memory format.
        groups (int): G, the channel groups of the output's second dim.
        pad (int): Rows of zeros above and below, and guard elements at
            both ends.
        scale (Tensor, optional): (C, ) factors applied in the same pass.
            Defaults to None.

    Returns:
        Tensor: (B, G, C // G, (H + 2 pad) * W + 2 pad), contiguous.
    """
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


def flat_interior(flat, pad, height, width):
    """The (B, C, H, W) interior of (B, G, C/G, L) flat rows."""
    B, G, Cg = flat.shape[:3]
    inner = pad + pad * width
    return flat[..., inner:inner + height * width].reshape(
        B, G * Cg, height, width)


def column_mask(kernel_size, width, like):
    """(k, W), in the dtype and on the device of ``like``: 1 where the
    horizontal tap ``dx`` of column ``w`` stays inside the row."""
    pad = kernel_size // 2
    cols = torch.arange(width, device=like.device)
    taps = torch.arange(kernel_size, device=like.device).view(-1, 1) - pad
    return ((cols + taps >= 0) & (cols + taps < width)).to(like.dtype)


def masked_kernels(kernels, mask, inplace=False):
    """Kernels (B, G, k*k, r, W) times the (k, W) column mask.

    Args:
        kernels (Tensor): (B, G, k*k, r, W), contiguous if ``inplace``.
        mask (Tensor): :func:`column_mask`.
        inplace (bool): Multiply ``kernels`` itself. Defaults to False.

    Returns:
        Tensor: (B, G, k*k, r*W).
    """
    B, G, k2, r, W = kernels.shape
    k = mask.shape[0]
    mask = mask.view(1, 1, 1, k, 1, W)
    if inplace:
        kernels.view(B, G, k, k, r, W).mul_(mask)
        return kernels.view(B, G, k2, r * W)
    return (kernels.reshape(B, G, k, k, r, W) * mask).view(B, G, k2, r * W)


def accumulate_offsets(out, flat, kernels, row0, width, kernel_size,
                       bias=None):
    """``out = bias + sum_i flat[offset i] * kernels[:, :, i]`` over the row
    chunk that starts at row ``row0``, without autograd.

    Args:
        out (Tensor): (B, G, C/G, n) output view (n = rows * W),
            overwritten.
        flat (Tensor): (B, G, C/G, L) input as flat rows.
        kernels (Tensor): (B, G, k*k, n) column-masked kernels.
        row0 (int): First output row of the chunk.
        width (int): W.
        kernel_size (int): k.
        bias (Tensor, optional): Broadcastable to ``out``. Defaults to None.
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

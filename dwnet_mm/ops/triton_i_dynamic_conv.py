"""Inhomogeneous dynamic depth-wise conv on GPUs: Triton kernels.

``out[n, c, p] = sum_t weight[n, g(c), t, p] * x[n, c, p + offset(t)]``
(zero padding), with the k*k taps ``t`` of each pixel ``p`` laid out
(B, G, k*k, H, W). Each program takes one (image, group) and a block of
pixels, keeps the group's channels in registers and accumulates all taps in
fp32 (fp64 for fp64 inputs), so a pass reads the kernels and writes the
output once; PyTorch ops need a pass over the whole tensor per tap. The
backward computes both gradients in one launch, each in the same gather
form.

Triton is imported on first use: CPU-only installs never need it. Setting
``TRITON_INTERPRET=1`` before the import runs the kernels on CPU tensors
(the tests do). The switch is :func:`dwnet_mm.ops.set_triton`
(``DWNET_MM_TRITON=0`` at start).
"""
import functools

import torch

# Pixels per program, times the padded channels of a group (registers).
_BLOCK_ELEMENTS = 4096


@functools.lru_cache(maxsize=None)
def _kernels():
    """The Triton kernels (forward, backward), imported on first use."""
    from . import triton_kernels
    return triton_kernels.forward_kernel, triton_kernels.backward_kernel


def _launch_config(channels, groups, height, width):
    """Channels per group, padded to a power of two, pixels per program and
    the programs per (image, group)."""
    cpg = channels // groups
    cpg_block = 1 << max(0, (cpg - 1).bit_length())
    block_p = max(32, min(256, _BLOCK_ELEMENTS // cpg_block))
    return cpg, cpg_block, block_p, -(-height * width // block_p)


def _accumulator(x, weight):
    """fp64 sums for fp64 inputs (gradcheck), else fp32."""
    import triton.language as tl
    return tl.float64 if torch.float64 in (x.dtype, weight.dtype) \
        else tl.float32


def _check(x, weight, kernel_size):
    B, C, H, W = x.shape
    if weight.dim() != 5 or weight.shape[0] != B or \
            weight.shape[2] != kernel_size**2 or \
            weight.shape[3:] != x.shape[2:] or C % weight.shape[1]:
        raise ValueError(
            f'weight of shape {tuple(weight.shape)} does not fit input '
            f'{tuple(x.shape)}: expected (B, G, {kernel_size**2}, H, W) '
            f'with G dividing C')


class TritonIDynamicConv(torch.autograd.Function):
    """The op of :func:`triton_i_dynamic_conv`, with its backward."""

    @staticmethod
    def forward(ctx, x, weight, kernel_size, out_dtype):
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.kernel_size = kernel_size
        return _forward(x, weight, kernel_size, out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x, grad_w = _backward(x, weight, grad_out, ctx.kernel_size,
                                   *ctx.needs_input_grad[:2])
        return grad_x, grad_w, None, None


def _backward(x, weight, grad_out, kernel_size, need_x, need_w):
    """(grad_x, grad_weight), each None where not needed."""
    if not (need_x or need_w):
        return None, None
    B, C, H, W = x.shape
    G = weight.shape[1]
    grad_out = grad_out.contiguous()
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = torch.empty_like(weight) if need_w else None
    cpg, cpg_block, block_p, pixel_blocks = _launch_config(C, G, H, W)
    _, backward_kernel = _kernels()
    backward_kernel[(B * G, pixel_blocks)](
        x, weight, grad_out, grad_x if need_x else x,
        grad_w if need_w else weight, C, H, W, G, K=kernel_size, CPG=cpg,
        CPG_BLOCK=cpg_block, BLOCK_P=block_p, NEED_X=need_x, NEED_W=need_w,
        ACC=_accumulator(x, weight))
    return grad_x, grad_w


def _forward(x, weight, kernel_size, out_dtype, input_scale=None,
             out_bias=None, out=None):
    B, C, H, W = x.shape
    G = weight.shape[1]
    if out is None:
        out = x.new_empty(x.shape, dtype=out_dtype)
    cpg, cpg_block, block_p, pixel_blocks = _launch_config(C, G, H, W)
    forward_kernel, _ = _kernels()
    forward_kernel[(B * G, pixel_blocks)](
        x, weight, input_scale if input_scale is not None else x,
        out_bias if out_bias is not None else x, out, C, H, W, G,
        K=kernel_size, CPG=cpg, CPG_BLOCK=cpg_block, BLOCK_P=block_p,
        HAS_SCALE=input_scale is not None, HAS_BIAS=out_bias is not None,
        ACC=_accumulator(x, weight))
    return out


def triton_i_dynamic_conv(x, weight, kernel_size, out_dtype=None):
    """Differentiable inhomogeneous dynamic depth-wise conv (Triton).

    Args:
        x (Tensor): Input (B, C, H, W).
        weight (Tensor): Kernels (B, G, k*k, H, W), G dividing C; any float
            dtype (the sums are in fp32).
        kernel_size (int): k.
        out_dtype (torch.dtype, optional): Of the output. Defaults to the
            promoted dtype of ``x`` and ``weight``.

    Returns:
        Tensor: (B, C, H, W), contiguous.
    """
    _check(x, weight, kernel_size)
    if out_dtype is None:
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
    return TritonIDynamicConv.apply(x, weight, kernel_size, out_dtype)


@torch.no_grad()
def triton_i_dynamic_conv_into(out, x, weight, kernel_size, input_scale=None,
                               out_bias=None):
    """Inference form, into ``out``: ``out = out_bias + input_scale *
    conv(x, weight)`` per channel (scale and bias (C, ) or None).

    Args:
        out (Tensor): (B, C, H, W) contiguous output, overwritten.
        x (Tensor): Input (B, C, H, W).
        weight (Tensor): Kernels (B, G, k*k, H, W).
        kernel_size (int): k.
        input_scale (Tensor, optional): (C, ) factors. Defaults to None.
        out_bias (Tensor, optional): (C, ) bias. Defaults to None.
    """
    _check(x, weight, kernel_size)
    if not out.is_contiguous() or out.shape != x.shape:
        raise ValueError(f'out must be contiguous {tuple(x.shape)}, got '
                         f'{tuple(out.shape)}')
    return _forward(x.contiguous(), weight.contiguous(), kernel_size,
                    out.dtype, input_scale, out_bias, out)

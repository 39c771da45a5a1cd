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
(the tests do). ``DWNET_MM_TRITON=0`` turns them off: the layer then runs
on PyTorch ops on the GPU. It is independent of ``DWNET_MM_NATIVE=0``,
which turns off the native CPU kernels (:mod:`.native`) only; set both for
PyTorch ops everywhere.
"""
import functools
import os

import torch

# The switch of the Triton kernels ('0': off), read at every dispatch.
TRITON_DISABLE_ENV = 'DWNET_MM_TRITON'

# Pixels per program, times the padded channels of a group (registers).
_BLOCK_ELEMENTS = 4096


@functools.lru_cache(maxsize=None)
def _kernels():
    """The Triton kernels (forward, backward), imported on first use."""
    from . import triton_kernels
    return triton_kernels.forward_kernel, triton_kernels.backward_kernel


@functools.lru_cache(maxsize=None)
def triton_available():
    """Whether Triton can be imported (it ships with CUDA builds of torch);
    asked once, not in every layer's forward."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_disabled():
    """Whether ``DWNET_MM_TRITON=0`` turns the Triton kernels off
    (``DWNET_MM_NATIVE`` does not).

    Returns:
        bool: True when the layers must not use these kernels.
    """
    return os.environ.get(TRITON_DISABLE_ENV, '1').strip() == '0'


def triton_i_dynamic_supported(x):
    """Whether :func:`triton_i_dynamic_conv` runs for ``x``: a CUDA tensor
    (or any tensor under ``TRITON_INTERPRET=1``), outside tracing and
    ``torch.compile``, with Triton installed and without
    ``DWNET_MM_TRITON=0``.

    Args:
        x (Tensor): The conv's input.

    Returns:
        bool: Whether the Triton kernels take ``x``.
    """
    if triton_disabled() or torch.jit.is_tracing() or \
            torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    interpret = os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')
    return (x.is_cuda or interpret) and triton_available()


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


class TritonIDynamicConvFromFeatures(torch.autograd.Function):
    """The op of :func:`triton_i_dynamic_conv_from_features`: it keeps the
    features, not the kernels, for the backward, which generates the kernels
    again (a GEMM of inner size C_h) instead of holding a (B, G*k*k, H, W)
    tensor per layer, G*k*k/C times the input (16x at DWNet-T's first
    stage). Autocast applies to the backward's GEMMs as to the forward's."""

    @staticmethod
    @torch.amp.custom_fwd(device_type='cuda')
    def forward(ctx, x, features, weight, kernel_size, groups, out_dtype):
        x = x.contiguous()
        ctx.save_for_backward(x, features, weight)
        ctx.kernel_size, ctx.groups = kernel_size, groups
        kernels = _generate(x, features, weight, groups, kernel_size)
        return _forward(x, kernels, kernel_size, out_dtype)

    @staticmethod
    @torch.amp.custom_bwd(device_type='cuda')
    def backward(ctx, grad_out):
        x, features, weight = ctx.saved_tensors
        need_x, need_f, need_w = ctx.needs_input_grad[:3]
        kernels = _generate(x, features, weight, ctx.groups, ctx.kernel_size)
        grad_x, grad_k = _backward(x, kernels, grad_out, ctx.kernel_size,
                                   need_x, need_f or need_w)
        grad_f = grad_w = None
        if grad_k is not None:
            grad_k = grad_k.view(x.shape[0], weight.shape[0], -1)
            if need_f:
                grad_f = torch.bmm(grad_k.transpose(1, 2),
                                   weight.expand(x.shape[0], -1, -1))
                grad_f = grad_f.to(features.dtype)
            if need_w:
                grad_w = torch.bmm(grad_k, features).sum(0).to(weight.dtype)
        return grad_x, grad_f, grad_w, None, None, None


def _generate(x, features, weight, groups, kernel_size):
    """(B, G*k*k, C_h) @ (B, C_h, HW), viewed (B, G, k*k, H, W)."""
    B, _, H, W = x.shape
    kernels = torch.bmm(weight.expand(B, -1, -1), features.transpose(1, 2))
    return kernels.view(B, groups, kernel_size**2, H, W)


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


def triton_i_dynamic_conv_from_features(x, features, weight, kernel_size,
                                        groups, out_dtype=None):
    """Differentiable I-Dynamic conv with kernels generated from features,
    ``kernels[b] = weight @ features[b].T``, without keeping the kernels
    for the backward (Triton).

    Args:
        x (Tensor): Input (B, C, H, W).
        features (Tensor): (B, H*W, C_h), e.g. with a ones column whose
            weight column is the bias.
        weight (Tensor): (G*k*k, C_h).
        kernel_size (int): k.
        groups (int): G, dividing C.
        out_dtype (torch.dtype, optional): Of the output. Defaults to the
            promoted dtype of ``x`` and the kernels.

    Returns:
        Tensor: (B, C, H, W), contiguous.
    """
    B, C, H, W = x.shape
    if features.shape[:2] != (B, H * W) or \
            weight.shape != (groups * kernel_size**2, features.shape[2]) or \
            C % groups:
        raise ValueError(
            f'features {tuple(features.shape)} and weight '
            f'{tuple(weight.shape)} do not fit input {tuple(x.shape)}: '
            f'expected (B, H*W, C_h) and (G*{kernel_size**2}, C_h) with G '
            f'({groups}) dividing C')
    if out_dtype is None:
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
    return TritonIDynamicConvFromFeatures.apply(x, features, weight,
                                                kernel_size, groups,
                                                out_dtype)


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

"""Linear layers on the native CPU kernels.

* Many rows (the deploy form's 1x1 convs and MLPs): :func:`linear_into`, on
  a weight packed once into column panels (cached per weight tensor), with
  the bias, a ReLU or the residual add fused into the product.
* A few rows (the dynamic conv's kernel generator, one pooled row per image
  to ``C * k * k`` kernel values, where BLAS is slow and every product
  streams the whole weight, up to 29 MB in D-DWNet-T):
  :func:`small_batch_linear`, which streams it once in the forward and once
  in the backward, making all three gradients in that pass.
"""
import weakref

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .native import native_ops, native_ops_for

# The native kernels take up to 64 rows. With 8, 16 and 32 rows they ran
# 1.1-3.3x as fast as BLAS, forward and backward (2 threads, D-DWNet-T's
# generator shapes, caches flushed).
MAX_NATIVE_ROWS = 32


def native_small_batch_supported(x, weight, bias=None):
    """Whether :func:`small_batch_linear` runs natively for these tensors."""
    # native_ops_for first: tracing sees no shape test.
    return native_ops_for(x) is not None and x.dim() == 2 and \
        1 <= x.shape[0] <= MAX_NATIVE_ROWS and all(
            t is None or (t.dtype == torch.float32 and t.device == x.device)
            for t in (weight, bias))


class SmallBatchLinear(torch.autograd.Function):
    """``F.linear`` on the native small-batch kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        return native_ops().small_batch_linear(
            x, weight, None if bias is None else bias.contiguous())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # needs_input_grad is False for a None bias.
        grad_x, grad_weight, grad_bias = \
            native_ops().small_batch_linear_backward(
                grad.contiguous(), x, weight, *ctx.needs_input_grad)
        return grad_x, grad_weight, grad_bias


def small_batch_linear(x, weight, bias=None):
    """``F.linear(x, weight, bias)`` for a 2-D ``x``: on the native kernels
    for fp32 CPU tensors of at most :data:`MAX_NATIVE_ROWS` rows, else on
    ``F.linear``.

    Args:
        x (Tensor): (B, in_features) input.
        weight (Tensor): (out_features, in_features) weight.
        bias (Tensor, optional): (out_features, ) bias. Defaults to None.

    Returns:
        Tensor: (B, out_features).
    """
    if native_small_batch_supported(x, weight, bias):
        return SmallBatchLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


# Below this many rows the native products of the training form do not pay
# for packing the weight in every call (stage 4 of DWNet-T at batch 8: 392
# rows, where the packing took 13% of the product's time).
MIN_PACKED_ROWS = 1024

# Packed weights by id(weight): the tensor (weakly), its version and data
# pointer when packed, and the packed tensor. An in-place update or a move
# repacks; the entry goes with the tensor.
_packed_weights = {}


def packed_linear_weight(weight, cache=True):
    """``weight`` (out, in) packed for :func:`linear_into`; with ``cache``,
    kept (as long as the tensor lives) until the tensor changes. The cache
    costs one more copy of the weight, which the deploy form, whose weights
    do not change, accepts."""
    if not cache:
        return native_ops().pack_linear_weight(weight.detach().contiguous())
    key = id(weight)
    entry = _packed_weights.get(key)
    if entry is not None:
        ref, version, pointer, packed = entry
        if ref() is weight and version == weight._version and \
                pointer == weight.data_ptr():
            return packed
    packed = native_ops().pack_linear_weight(weight.detach().contiguous())
    _packed_weights[key] = (weakref.ref(
        weight, lambda _, key=key: _packed_weights.pop(key, None)),
                            weight._version, weight.data_ptr(), packed)
    return packed


def native_linear_operands(x, weight, bias=None, transposed_x=False):
    """Shapes, dtypes and devices the native products take: fp32 CPU
    tensors, ``x`` 2-D and contiguous (or, with ``transposed_x``, the
    transpose of a contiguous tensor), a multiple of 16 outputs."""
    tensors = [t for t in (x, weight, bias) if t is not None]
    if native_ops_for(x) is None or x.dim() != 2 or weight.shape[0] % 16:
        return False
    if not x.is_contiguous() and not (transposed_x and x.t().is_contiguous()):
        return False
    return all(t.dtype == torch.float32 and t.device == x.device
               for t in tensors)


def native_linear_supported(x, weight, bias=None, transposed_x=False):
    """Whether :func:`linear_into` runs natively: the operands of
    :func:`native_linear_operands`, outside autograd."""
    if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, bias)):
        return False
    return native_linear_operands(x, weight, bias, transposed_x)


def _native_out(out):
    return out.is_contiguous() and out.dtype == torch.float32


def linear_into(out, x, weight, bias=None, relu=False, accumulate=False,
                packed=None, native=True):
    """``out = [out +] x @ weight.T [+ bias]``, then ``relu`` if set, in
    place, for 2-D ``x`` and ``out``, without autograd.

    On the native kernels where :func:`native_linear_supported`, else on
    PyTorch ops.

    Args:
        packed (Tensor, optional): ``weight`` packed by
            :func:`packed_linear_weight`. Defaults to its cached packing.
        native (bool): False for PyTorch ops. Defaults to True.

    Returns:
        Tensor: ``out``.
    """
    if native and native_linear_supported(x, weight, bias) and \
            _native_out(out):
        if packed is None:
            packed = packed_linear_weight(weight)
        native_ops().packed_linear(x, packed, bias, out, relu, accumulate)
        return out
    if accumulate:
        out.addmm_(x, weight.t())
    else:
        torch.mm(x, weight.t(), out=out)
    if bias is not None:
        out.add_(bias)
    return out.relu_() if relu else out


def matmul_into(out, x, b, accumulate=False):
    """``out = [out +] x @ b`` in place, for 2-D tensors without autograd;
    natively where ``b`` (K, N) is contiguous with N a multiple of 16 and
    ``x`` contiguous or a transposed contiguous tensor: the backward's
    input gradient ``grad @ weight`` and weight gradient ``grad.T @ x``,
    with no copies."""
    if native_linear_supported(x, b.t(), transposed_x=True) and \
            b.is_contiguous() and _native_out(out):
        native_ops().matmul_into(x, b, out, accumulate)
        return out
    if accumulate:
        return out.addmm_(x, b)
    return torch.mm(x, b, out=out)


class PackedLinear(torch.autograd.Function):
    """``F.linear`` of 2-D ``x`` on the native kernels: the weight packed
    in each forward, the input gradient read from the weight as it is."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = x.new_empty(x.shape[0], weight.shape[0])
        return linear_into(out, x, weight, bias,
                           packed=packed_linear_weight(weight, cache=False))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = matmul_into(torch.empty_like(x), grad, weight) \
            if need_x else None
        grad_weight = matmul_into(weight.new_empty(weight.shape), grad.t(),
                                  x) if need_weight else None
        grad_bias = grad.sum(0) if ctx.has_bias and need_bias else None
        return grad_x, grad_weight, grad_bias


def rows_linear(x, weight, bias=None):
    """``F.linear(x, weight, bias)`` over the last dim of a contiguous
    ``x``: on the native kernels for fp32 CPU tensors of at least
    :data:`MIN_PACKED_ROWS` rows and a multiple of 16 outputs, else
    on ``F.linear``."""
    rows = x.view(-1, x.shape[-1]) if x.is_contiguous() else None
    if rows is None or rows.shape[0] < MIN_PACKED_ROWS or \
            not native_linear_operands(rows, weight, bias):
        return F.linear(x, weight, bias)
    out = PackedLinear.apply(rows, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])

"""Linear layers, on the native CPU kernels where they run.

Modules call :func:`linear` (or its deploy shorthands :func:`linear_relu`
and :func:`residual_linear`), which picks one of the entry points below;
they stay public for the ops that need one job done:

* :func:`small_batch_linear`: a few rows (the dynamic conv's kernel
  generator, one pooled row per image to ``C * k * k`` kernel values, where
  BLAS is slow and every product streams the whole weight, up to 29 MB in
  D-DWNet-T), differentiable; it streams the weight once in the forward and
  once in the backward, making all three gradients in that pass.
* :func:`rows_linear`: many rows, differentiable (training): the weight
  packed in every call (:class:`PackedLinear`), from
  :data:`MIN_PACKED_ROWS` rows on.
* :func:`linear_into`: into a given output, without autograd, with the
  bias, a ReLU or the residual add fused into the product; the weight
  packed once into column panels and cached per weight tensor (deploy).
* :func:`matmul_into`: ``out = [out +] x @ b`` without autograd: the
  products of the backwards (a weight, not its transpose).
"""
import weakref
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .dispatch import exporting, fast_path
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


def linear(x, weight, bias=None, relu=False, out=None, accumulate=False,
           cache_packed=False):
    """``[out +] x @ weight.T [+ bias]``, then ReLU if ``relu``, over the
    last dim of ``x``: the one linear entry for modules.

    The backend, chosen once: :func:`small_batch_linear` for a few fp32 CPU
    rows (with or without autograd); without autograd, autocast or mixed
    dtypes, :func:`linear_into` (native where it runs, in place into
    ``out``); else :func:`rows_linear` (differentiable, out of place: with
    ``accumulate`` it returns ``out + linear(x)`` and leaves ``out`` as it
    is).

    Args:
        x (Tensor): (..., in_features) input.
        weight (Tensor): (out_features, in_features) weight.
        bias (Tensor, optional): (out_features, ) bias. Defaults to None.
        relu (bool): Apply ReLU to the result. Defaults to False.
        out (Tensor, optional): (..., out_features) contiguous output,
            written without autograd. Defaults to None: a new tensor.
        accumulate (bool): Add to ``out`` (required then). Defaults to
            False.
        cache_packed (bool): Keep the weight's native packing between
            calls (one more copy of it; for weights that do not change, the
            deploy form's). Defaults to False: packed in every call, and
            only for :data:`MIN_PACKED_ROWS` rows or more.

    Returns:
        Tensor: (..., out_features): ``out`` where it was written, else a
        new contiguous tensor.
    """
    rows = x.reshape(-1, x.shape[-1])
    if out is None and not exporting() and \
            native_small_batch_supported(rows, weight, bias):
        backend = 'small_batch'
    elif fast_path(x, weight, bias, out):
        backend = 'into'
    else:
        backend = 'rows'
    if backend == 'small_batch':
        y = small_batch_linear(rows, weight, bias).view(
            *x.shape[:-1], weight.shape[0])
        return F.relu(y) if relu else y
    if backend == 'rows':
        y = rows_linear(x, weight, bias)
        if accumulate:
            y = out + y
        return F.relu(y) if relu else y
    return _linear_into(rows.contiguous(), weight, bias, relu, out,
                        accumulate, cache_packed, x.shape[:-1])


def _linear_into(rows, weight, bias, relu, out, accumulate, cache_packed,
                 batch_shape):
    """The ``into`` backend of :func:`linear`: 2-D ``rows``."""
    if out is None:
        out = rows.new_empty(*batch_shape, weight.shape[0])
    out_rows = out.view(-1, out.shape[-1])
    if cache_packed:
        linear_into(out_rows, rows, weight, bias, relu, accumulate)
        return out
    native = rows.shape[0] >= MIN_PACKED_ROWS and \
        native_linear_supported(rows, weight, bias) and _native_out(out_rows)
    if not native and not accumulate:
        # PyTorch's addmm adds the bias in the product.
        torch.addmm(bias, rows, weight.t(), out=out_rows) \
            if bias is not None else torch.mm(rows, weight.t(), out=out_rows)
        return out.relu_() if relu else out
    packed = packed_linear_weight(weight, cache=False) if native else None
    linear_into(out_rows, rows, weight, bias, relu, accumulate, packed=packed,
                native=native)
    return out


class LinearWeights(NamedTuple):
    """The weight and bias of a linear layer, e.g. one with its channels
    reordered; callable like ``nn.Linear``."""
    weight: torch.Tensor
    bias: Optional[torch.Tensor]

    def __call__(self, x):
        return F.linear(x, self.weight, self.bias)


def linear_relu(x, layer):
    """``relu(layer(x))`` of a deploy-form layer (its packing cached).

    Args:
        x (Tensor): (..., in_features) input.
        layer (nn.Linear | LinearWeights): The layer.

    Returns:
        Tensor: (..., out_features), contiguous.
    """
    return linear(x, layer.weight, layer.bias, relu=True, cache_packed=True)


def residual_linear(residual, x, layer, inplace=False):
    """``residual + layer(x)`` of a deploy-form layer (its packing cached).

    Args:
        residual (Tensor): (..., out_features) contiguous residual.
        x (Tensor): (..., in_features) input.
        layer (nn.Linear | LinearWeights): The layer.
        inplace (bool): Without autograd, add into ``residual`` itself and
            return it. Defaults to False.

    Returns:
        Tensor: (..., out_features).
    """
    if not inplace and fast_path(residual, x, layer.weight, layer.bias):
        residual = residual.clone()
    return linear(x, layer.weight, layer.bias, out=residual, accumulate=True,
                  cache_packed=True)

"""The MLP ``fc2(gelu(fc1(x)))`` with the native CPU kernels, in row chunks.

Each chunk's hidden activations stay in cache between the GEMMs and the
GELU, which then runs as a native kernel (PyTorch's exact GELU is bound by
arithmetic, 2-3x slower). In inference, where both weights are small
enough, one native call (:func:`fused_mlp`) runs the whole MLP in blocks of
rows per thread whose hidden activations stay in that core's L2 cache. For
training, only ``fc1``'s output is kept for the backward, which recomputes
the GELU and its derivative per chunk (in one pass) and writes the hidden
gradient over it, so no (rows, hidden) tensor is allocated beyond the
forward's one; with small weights (DWNet's first stage) nothing of it is
kept, and the backward computes ``fc1`` again per block of rows, in cache
(:class:`FusedMlpFunction`).
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .dispatch import fast_path, needs_autograd
from .gemm import (MIN_PACKED_ROWS, linear_into, matmul_into,
                   native_linear_operands, native_linear_supported,
                   packed_linear_weight)
from .native import native_ops, native_ops_for

# Hidden activations per chunk (8 MiB in fp32): in the CPU's last-level
# cache, and rows enough for fast GEMMs; 2^19 and 2^17 were slower in a
# DWNet-T training step (2 threads).
MLP_CHUNK_ELEMENTS = 1 << 21

# The activation codes of the C++ kernel.
ACTIVATIONS = {'none': 0, 'relu': 1, 'gelu': 2}


# Hidden activations per block of the fused MLP (192 KiB in fp32): in a
# core's L2 cache beside the block's rows and the weight panels. 48-384 KiB
# ran within 5% of each other on DWNet-T's stages 1-3 (2 threads).
FUSED_MLP_BLOCK_ELEMENTS = 48 * 1024
# The fused MLP reads both weights once per block of rows, so it needs them
# in the shared cache: up to 8 MiB of fp32 weights (DWNet-T's stages 1-3,
# 0.3-4.7 MB, ran 1.1-1.3x as fast as in chunks; stage 4, 19 MB, 0.6-0.8x).
FUSED_MLP_MAX_WEIGHT_ELEMENTS = 2 << 20


# The training MLP computes fc1 again in its backward, in cache
# (FusedMlpFunction), instead of saving its (rows, hidden) output, where
# both weights hold at most this many values: its threads' weight
# gradient sums then stay in L2. On DWNet-T's stage 1 (C = 96, 25088 rows)
# forward and backward ran in 0.75-0.8x the time, and at stage 2 (C = 192)
# in about the same; at stages 3-4 the sums outgrow L2 (1.6-2x the time).
RECOMPUTE_MLP_MAX_WEIGHT_ELEMENTS = 1 << 17


def mlp_chunk_rows(rows, width):
    """Rows per chunk for ``rows`` rows of ``width`` hidden values: equal
    chunks of at most :data:`MLP_CHUNK_ELEMENTS` (a small last chunk would
    run at a poor GEMM speed)."""
    max_rows = max(1, MLP_CHUNK_ELEMENTS // width)
    num_chunks = max(1, -(-rows // max_rows))
    return max(1, -(-rows // num_chunks))


def bias_activation_(x, bias=None, activation='none', out=None):
    """``x += bias`` and ``out = activation(x)``, in one pass.

    Without autograd (it writes into its arguments); the native kernels for
    contiguous fp32 CPU tensors, else PyTorch ops.

    Args:
        x (Tensor): Input, its last dim the channels; updated in place.
        bias (Tensor, optional): (C, ) bias. Defaults to None.
        activation (str): 'none', 'relu' or 'gelu' (exact). Defaults to
            'none'.
        out (Tensor, optional): Where the activation goes, shaped like
            ``x``. Defaults to None: into ``x``.

    Returns:
        Tensor: ``out``, or ``x``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f'Unknown activation {activation!r}; choose one '
                         f'of {sorted(ACTIVATIONS)}')
    ops = native_ops_for(x)
    if ops is not None and x.is_contiguous() and (
            out is None or out.is_contiguous()) and (bias is None
                                                     or bias.dtype == x.dtype):
        ops.bias_activation(x, None if bias is None else bias.contiguous(),
                            ACTIVATIONS[activation], out)
        return x if out is None else out
    if bias is not None:
        x.add_(bias)
    out = x if out is None else out.copy_(x)
    if activation == 'relu':
        out.relu_()
    elif activation == 'gelu':
        torch.ops.aten.gelu_(out)
    return out


def fused_mlp_supported(x, w1, w2):
    """Whether :func:`fused_mlp` runs for 2-D ``x`` and these weights:
    without autograd, operands the native products take, weights of at most
    :data:`FUSED_MLP_MAX_WEIGHT_ELEMENTS`."""
    return w1.numel() + w2.numel() <= FUSED_MLP_MAX_WEIGHT_ELEMENTS and \
        native_linear_supported(x, w1) and native_linear_supported(x, w2)


def recomputing_mlp_supported(x, fc1, fc2):
    """Whether :class:`FusedMlpFunction` trains the MLP for 2-D ``x``:
    operands the native products take (inner size a multiple of 16 too),
    at least MIN_PACKED_ROWS rows, weights of at most
    :data:`RECOMPUTE_MLP_MAX_WEIGHT_ELEMENTS`."""
    return x.shape[0] >= MIN_PACKED_ROWS and \
        fc1.weight.shape[1] % 16 == 0 and \
        fc1.weight.numel() + fc2.weight.numel() <= \
        RECOMPUTE_MLP_MAX_WEIGHT_ELEMENTS and \
        native_linear_operands(x, fc1.weight, fc1.bias) and \
        native_linear_operands(x, fc2.weight, fc2.bias)


def fused_mlp(out, x, w1, b1, w2, b2, accumulate=False, packed=None):
    """``out = [out +] fc2(gelu(fc1(x)))`` in one native call, where
    :func:`fused_mlp_supported`; ``out`` may be ``x`` itself (the residual
    update in place).

    Args:
        out (Tensor): (rows, C_out) output, contiguous.
        x (Tensor): (rows, C) input, contiguous.
        w1, b1, w2, b2 (Tensor): ``fc1`` and ``fc2`` weights and biases
            (biases optional).
        accumulate (bool): Add to ``out`` instead of overwriting it.
            Defaults to False.
        packed (tuple[Tensor], optional): Both weights packed by
            :func:`packed_linear_weight`. Defaults to their cached packing.

    Returns:
        Tensor: ``out``.
    """
    if packed is None:
        packed = packed_linear_weight(w1), packed_linear_weight(w2)
    native_ops().fused_mlp(x, packed[0], b1, packed[1], b2, out, accumulate,
                           fused_mlp_block_rows(w1.shape[0]))
    return out


def fused_mlp_block_rows(hidden_width):
    """Rows per block of :func:`fused_mlp`: whole 12-row tiles, with
    :data:`FUSED_MLP_BLOCK_ELEMENTS` hidden activations at most."""
    return max(12, FUSED_MLP_BLOCK_ELEMENTS // hidden_width // 12 * 12)


def _forward_chunks(x, w1, b1, w2, b2, out=None, accumulate=False,
                    hidden=None, workspace=None, cache_packed=False):
    """``out = [out +] fc2(gelu(fc1(x)))`` of 2-D contiguous ``x``, without
    autograd: one fused native call where it runs, else in row chunks (on a
    CPU; one chunk elsewhere) through one hidden buffer.

    Args:
        x (Tensor): (rows, C) input.
        w1, b1, w2, b2 (Tensor): ``fc1`` and ``fc2`` weights and biases
            (biases optional).
        out (Tensor, optional): (rows, C_out) contiguous output; may be
            ``x`` itself with ``accumulate`` (the residual add in place).
            Defaults to a new tensor.
        accumulate (bool): Add to ``out``. Defaults to False.
        hidden (Tensor, optional): (rows, hidden) where ``fc1(x)`` (with its
            bias) is kept for a backward. Defaults to None.
        workspace (Tensor, optional): 1-D buffer for a chunk's hidden
            activations, used where large enough. Defaults to a new one.
        cache_packed (bool): See :func:`mlp`. Defaults to False.

    Returns:
        Tensor: ``out``.
    """
    rows, width = x.shape[0], w1.shape[0]
    if out is None:
        out = x.new_empty(rows, w2.shape[0])
    packed1, packed2 = _packed_weights(x, w1, w2, cache_packed)
    native = packed1 is not None
    if native and hidden is None and fused_mlp_supported(x, w1, w2):
        return fused_mlp(out, x, w1, b1, w2, b2, accumulate,
                         packed=(packed1, packed2))
    # Chunks keep the hidden rows in a CPU's cache; a GPU gains nothing
    # from them and loses on the smaller GEMMs.
    step = mlp_chunk_rows(rows, width) if x.device.type == 'cpu' else rows
    if workspace is None or workspace.numel() < step * width:
        workspace = x.new_empty(step * width)
    for start in range(0, rows, step):
        chunk = x[start:start + step]
        act = workspace[:chunk.shape[0] * width].view(-1, width)
        if hidden is None:
            linear_into(act, chunk, w1, packed=packed1, native=native)
            bias_activation_(act, b1, 'gelu')
        else:
            h = linear_into(hidden[start:start + step], chunk, w1,
                            packed=packed1, native=native)
            bias_activation_(h, b1, 'gelu', out=act)
        linear_into(out[start:start + step], act, w2, b2,
                    accumulate=accumulate, packed=packed2, native=native)
    return out


def _packed_weights(x, w1, w2, cache=False):
    """Both weights packed for :func:`linear_into` where the native
    products run, else Nones (the products then run on PyTorch's). Without
    ``cache`` they are packed for this call only, which pays from
    MIN_PACKED_ROWS rows on."""
    if not native_linear_supported(x, w1) or \
            not native_linear_supported(x, w2):
        return None, None
    if cache:
        return packed_linear_weight(w1), packed_linear_weight(w2)
    if x.shape[0] < MIN_PACKED_ROWS:
        return None, None
    return (packed_linear_weight(w1, cache=False),
            packed_linear_weight(w2, cache=False))


class GeluMlpFunction(torch.autograd.Function):
    """Differentiable :func:`gelu_mlp` on 2-D fp32 CPU ``x``.

    Its backward overwrites the saved ``fc1`` output with the hidden
    gradient, so it runs once per forward (no ``retain_graph`` reruns;
    gradient checkpointing recomputes the forward and is fine).
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        hidden = x.new_empty(x.shape[0], w1.shape[0])
        out = _forward_chunks(x, w1, b1, w2, b2, hidden=hidden)
        ctx.save_for_backward(x, hidden, w1, w2)
        ctx.has_bias = b1 is not None, b2 is not None
        ctx.used = False
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if ctx.used:
            raise RuntimeError(
                'The dwnet_mm MLP backward ran twice on one graph; it '
                'overwrites its saved activations. Run the forward again '
                'instead of backward(retain_graph=True), or set '
                'DWNET_MM_NATIVE=0 for the PyTorch MLP.')
        ctx.used = True
        x, hidden, w1, w2 = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        ops = native_ops_for(x)
        grad_out = grad_out.contiguous()
        rows, width = hidden.shape
        step = mlp_chunk_rows(rows, width)
        buffer = x.new_empty(step, width)
        grad_x = torch.empty_like(x) if need_x else None
        grad_w2 = None
        need_hidden = need_x or need_w1 or need_b1
        for start in range(0, rows, step):
            h = hidden[start:start + step]
            g = grad_out[start:start + step]
            buf = buffer[:h.shape[0]]
            if need_hidden:
                # buf = GELU(h) and h = GELU'(h): one evaluation of Phi.
                ops.gelu_and_slope_(h, buf)
            elif need_w2:
                ops.bias_activation(h, None, ACTIVATIONS['gelu'], buf)
            if need_w2:
                if grad_w2 is None:
                    grad_w2 = matmul_into(w2.new_empty(w2.shape), g.t(), buf)
                else:
                    matmul_into(grad_w2, g.t(), buf, accumulate=True)
            if not need_hidden:
                continue  # fc1 frozen and x a leaf: no hidden gradient
            h.mul_(matmul_into(buf, g, w2))
            if need_x:
                matmul_into(grad_x[start:start + step], h, w1)
        # `hidden` holds the gradient of fc1's output now.
        grad_w1 = matmul_into(w1.new_empty(w1.shape), hidden.t(),
                              x) if need_w1 else None
        grad_b1 = hidden.sum(0) if ctx.has_bias[0] and need_b1 else None
        grad_b2 = grad_out.sum(0) if ctx.has_bias[1] and need_b2 else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


class FusedMlpFunction(torch.autograd.Function):
    """Differentiable :func:`gelu_mlp` on 2-D fp32 CPU ``x`` that keeps no
    hidden activations: the forward is :func:`fused_mlp`, and the backward
    computes ``fc1`` again per block of rows, in cache, beside the
    gradients (one more GEMM of the forward's two)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        packed1 = packed_linear_weight(w1, cache=False)
        out = fused_mlp(x.new_empty(x.shape[0], w2.shape[0]), x, w1, b1, w2,
                        b2, packed=(packed1,
                                    packed_linear_weight(w2, cache=False)))
        ctx.save_for_backward(x, w1, b1, w2)
        ctx.packed1 = packed1
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, w1, b1, w2 = ctx.saved_tensors
        # needs_input_grad is False for a None bias.
        grads = native_ops().fused_mlp_backward(
            grad_out.contiguous(), x, w1.contiguous(), ctx.packed1, b1,
            w2.contiguous(), fused_mlp_block_rows(w1.shape[0]),
            *ctx.needs_input_grad)
        return tuple(grads)  # None where not asked for


def native_mlp_supported(x, fc1, fc2):
    """Whether :func:`gelu_mlp` runs the native kernels for ``x``."""
    params = [p for p in (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
              if p is not None]
    return native_ops_for(x) is not None and all(
        p.device == x.device and p.dtype == x.dtype for p in params)


def mlp(x, fc1, fc2, residual=False, inplace=False, workspace=None,
        cache_packed=False):
    """``[x +] fc2(gelu(fc1(x)))`` over the last dim of ``x`` (exact GELU).

    The backend, chosen once: exporting or tracing, PyTorch ops; without
    autograd, autocast or mixed dtypes, one fused native call where the
    weights fit, else row chunks through one hidden buffer (native products
    where they run), accumulating into ``x`` itself if ``inplace``; with
    autograd, the native autograd Functions for fp32 CPU tensors
    (:class:`FusedMlpFunction`, :class:`GeluMlpFunction`), else PyTorch ops.

    Args:
        x (Tensor): (..., C) input.
        fc1 (nn.Linear | LinearWeights): C -> hidden.
        fc2 (nn.Linear | LinearWeights): hidden -> C_out.
        residual (bool): Add ``x`` to the result (C_out = C). Defaults to
            False.
        inplace (bool): With ``residual``, without autograd: add into ``x``
            itself (contiguous) and return it. Defaults to False.
        workspace (Tensor, optional): 1-D hidden buffer of the chunks, used
            where it holds a chunk (see :class:`MlpWorkspace`). Defaults to
            a new one.
        cache_packed (bool): Keep the weights' native packing between calls
            (one more copy of each; for weights that do not change, the
            deploy form's). Defaults to False: packed in every call, and
            only for MIN_PACKED_ROWS rows or more.

    Returns:
        Tensor: (..., C_out), contiguous (``x`` itself where it was
        updated in place).
    """
    params = (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    if fast_path(x, *params):
        backend = 'chunks'
    elif needs_autograd(x, *params) and native_mlp_supported(x, fc1, fc2):
        backend = 'functions'
    else:
        backend = 'torch'
    if backend == 'chunks':
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        out = None
        if residual:
            out = rows if inplace else rows.clone()
        out = _forward_chunks(rows, *params, out=out, accumulate=residual,
                              workspace=workspace, cache_packed=cache_packed)
        return out.view(*x.shape[:-1], out.shape[-1])
    if backend == 'functions':
        out = _mlp_functions(x, fc1, fc2)
    else:
        out = F.linear(F.gelu(F.linear(x, fc1.weight, fc1.bias)), fc2.weight,
                       fc2.bias)
    return x + out if residual else out


def _mlp_functions(x, fc1, fc2):
    """The differentiable native MLP of fp32 CPU ``x``."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    function = FusedMlpFunction if recomputing_mlp_supported(
        rows, fc1, fc2) else GeluMlpFunction
    out = function.apply(rows, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    return out.view(*x.shape[:-1], out.shape[-1])


def new_workspace(x, hidden_width):
    """A hidden buffer for :func:`mlp` of ``x`` with ``hidden_width``
    hidden units: on a CPU at most :data:`MLP_CHUNK_ELEMENTS` (the MLP runs
    in row chunks), else the hidden activations of all rows.

    Args:
        x (Tensor): (..., C) input of the MLP.
        hidden_width (int): Its hidden units.

    Returns:
        Tensor: 1-D, on ``x``'s device and in its dtype.
    """
    return x.new_empty(_workspace_elements(x, hidden_width))


def _workspace_elements(x, hidden_width):
    elements = x[..., :1].numel() * hidden_width
    if x.device.type == 'cpu':
        elements = min(MLP_CHUNK_ELEMENTS, elements)
    return elements


class MlpWorkspace:
    """One hidden buffer for the MLPs of the blocks of a model within one
    forward (:meth:`release` it after)."""

    def __init__(self):
        self.buffer = None

    def get(self, x, hidden_width):
        """A 1-D buffer for :func:`mlp` of ``x`` with ``hidden_width``
        hidden units (see :func:`new_workspace`), reused while it holds
        them."""
        buffer = self.buffer
        if buffer is None or buffer.device != x.device or \
                buffer.dtype != x.dtype or \
                buffer.numel() < _workspace_elements(x, hidden_width):
            buffer = self.buffer = new_workspace(x, hidden_width)
        return buffer

    def release(self):
        """Free the buffer: no activation memory is held between calls."""
        self.buffer = None

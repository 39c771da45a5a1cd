"""The predicates every op of :mod:`dwnet_mm.ops` chooses its backend by.

Each public op asks them once, at its top, in this order:

1. :func:`exporting`: ONNX export, where only standard ops may run: the
   export forms (:func:`tracing` adds TorchScript traces, e.g. mmengine's
   FLOP counter, for ops whose fast forms a trace cannot see into).
2. :func:`needs_autograd`: a graph is recorded, so the backend must be
   differentiable (autograd Functions or PyTorch ops), and nothing may be
   written in place.
3. Without autograd, :func:`fast_path`: ``out=`` and in-place kernels
   (one dtype, no autocast), then the native CPU kernels where their
   ``native_*_supported`` predicate holds, Triton on GPUs, else PyTorch.

The export test is read through :mod:`dwnet_mm.ops.export` at call time,
so a test can patch ``dwnet_mm.ops.export.onnx_exporting``.
"""
import torch

from . import export


def exporting():
    """True while ``torch.onnx.export`` runs: the ops take their export
    forms (standard ops, no autograd Functions, no ``out=`` or in-place
    writes into views)."""
    return export.onnx_exporting()


def tracing():
    """:func:`exporting`, or a ``torch.jit.trace`` (mmengine's FLOP
    counter), which records aten ops and autograd Functions but not what
    the native or Triton kernels or chunk loops do."""
    return exporting() or torch.jit.is_tracing()


def needs_autograd(*tensors):
    """Whether autograd records a graph for these tensors (None skipped).

    Never while exporting: the exporter cannot trace into autograd
    Functions, and the graph it records is for inference.

    Args:
        *tensors (Tensor | None): The op's tensor arguments.
    """
    if exporting():
        return False
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


def fast_path(*tensors):
    """Whether the ``out=`` and in-place kernels may run for these tensors
    (None skipped): not exporting or tracing, without autograd, outside
    autocast and with one dtype (the ``out=`` forms do not mix dtypes).

    Args:
        *tensors (Tensor | None): The op's tensor arguments, the first one
            not None decides the autocast device.
    """
    tensors = [t for t in tensors if t is not None]
    if tracing() or needs_autograd(*tensors):
        return False
    return not torch.is_autocast_enabled(tensors[0].device.type) and \
        len({t.dtype for t in tensors}) == 1


def apply_relu(x, inplace):
    """``relu(x)``, in place if ``inplace`` (where no graph needs ``x``)."""
    return x.relu_() if inplace else torch.relu(x)

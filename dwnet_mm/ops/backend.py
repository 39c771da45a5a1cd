"""Where the ops of :mod:`dwnet_mm.ops` choose their backend: one place.

Each op asks :func:`backend` once, at its top:

* ``'export'`` while ``torch.onnx.export`` runs: standard ops only, with
  sizes that follow the input (:mod:`.export`);
* ``'trace'`` in a ``torch.jit.trace`` (mmengine's FLOP counter): PyTorch
  ops, where an op without an aten counterpart is one autograd Function
  node that a FLOP handle can count;
* ``'native'``: the C++ CPU kernels (``dwnet_mm._ext``, compiled at install
  time by ``setup.py``), for fp32 CPU tensors outside tracing and autocast;
* ``'triton'``: the Triton kernel of the I-Dynamic conv, on GPUs;
* ``'torch'``: PyTorch's own ops (oneDNN/MKL on CPUs, cuDNN/cuBLAS on GPUs),
  the form every other one is checked against.

The switches are read once, from ``DWNET_MM_NATIVE`` and ``DWNET_MM_TRITON``
(``0``: off) at import, and changed with :func:`set_native` and
:func:`set_triton` (or :func:`pytorch_ops` for a block of code).
"""
import contextlib
import functools
import importlib
import os
import warnings

import torch

from .export import onnx_exporting


def _env_switch(name):
    return os.environ.get(name, '1').strip() != '0'


_native_enabled = _env_switch('DWNET_MM_NATIVE')
_triton_enabled = _env_switch('DWNET_MM_TRITON')


def use_native():
    """Whether the native CPU kernels may run (``DWNET_MM_NATIVE``, or the
    last :func:`set_native`)."""
    return _native_enabled


def set_native(enable=True):
    """Turn the native CPU kernels on or off for this process.

    Args:
        enable (bool): Defaults to True.
    """
    global _native_enabled
    _native_enabled = bool(enable)


def use_triton():
    """Whether the Triton kernel may run (``DWNET_MM_TRITON``, or the last
    :func:`set_triton`)."""
    return _triton_enabled


def set_triton(enable=True):
    """Turn the Triton kernel on or off for this process.

    Args:
        enable (bool): Defaults to True.
    """
    global _triton_enabled
    _triton_enabled = bool(enable)


@contextlib.contextmanager
def pytorch_ops():
    """Run the ops on PyTorch ops only (no native or Triton kernels) inside
    the block; the switches are restored after it."""
    saved = use_native(), use_triton()
    set_native(False), set_triton(False)
    try:
        yield
    finally:
        set_native(saved[0]), set_triton(saved[1])


@functools.lru_cache(maxsize=None)
def _load_native():
    try:
        # The compiled module imports nothing of dwnet_mm (by name, so the
        # import graph does not see the package itself imported here).
        _ext = importlib.import_module('dwnet_mm._ext')
    except ImportError as error:
        warnings.warn(
            f'dwnet_mm: its CPU kernels are not built ({error}); the layers '
            'run on PyTorch ops. Install dwnet_mm with a C++ compiler '
            '(pip install --no-build-isolation -e .) to build them, or set '
            'DWNET_MM_NATIVE=0 to silence this')
        return None
    if not _ext.cpu_supported():
        warnings.warn('dwnet_mm: this CPU lacks AVX2/FMA, which its CPU '
                      'kernels need; the layers run on PyTorch ops')
        return None
    return _ext


def native_ops():
    """The compiled CPU kernels, or None where they are off or missing (a
    warning, once per process, says why)."""
    return _load_native() if use_native() else None


def needs_autograd(*tensors):
    """Whether autograd records a graph for these tensors (None skipped)."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


def backend_for(x, triton=False):
    """The backend of an op on input ``x``: ``'export'``, ``'trace'``,
    ``'native'``, ``'triton'`` or ``'torch'`` (see the module docstring).

    Args:
        x (Tensor): The op's input.
        triton (bool): The op has a Triton kernel. Defaults to False.
    """
    if onnx_exporting():
        return 'export'
    if torch.jit.is_tracing():
        return 'trace'
    if torch.jit.is_scripting() or torch.compiler.is_compiling():
        return 'torch'
    # TRITON_INTERPRET=1 runs the Triton kernel on CPU tensors (tests).
    if triton and use_triton() and (x.is_cuda or os.environ.get(
            'TRITON_INTERPRET', '0') not in ('', '0')) and _triton_available():
        return 'triton'
    if x.device.type == 'cpu' and x.dtype == torch.float32 and \
            not torch.is_autocast_enabled('cpu') and native_ops() is not None:
        return 'native'
    return 'torch'


@functools.lru_cache(maxsize=None)
def _triton_available():
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True

"""Loading the C++ CPU kernels (``csrc/``), compiled once on first use.

torch's extension builder compiles them into its cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) the
first time a process needs them (about a minute on two cores;
``tools/install_env.sh`` does it at install time) and reuses the build until
the sources change. Without a compiler, on a non-x86 CPU or with
``DWNET_MM_NATIVE=0`` the layers run on PyTorch ops instead (slower on CPUs,
same results).

``DWNET_MM_NATIVE=0`` concerns these CPU kernels only; the Triton GPU kernel
of the I-Dynamic conv has its own switch, ``DWNET_MM_TRITON=0``
(:mod:`.triton_i_dynamic_conv`). Both set, every layer runs on PyTorch ops.
"""
import functools
import logging
import os
import platform
import warnings
from pathlib import Path

import torch

SOURCES = [
    Path(__file__).parent / 'csrc' / name
    for name in ('bindings.cpp', 'activation.cpp', 'depthwise_conv.cpp',
                 'i_dynamic_conv.cpp', 'packed_linear.cpp',
                 'small_batch_linear.cpp')
]
# The switch of these CPU kernels ('0': off), read at every dispatch.
DISABLE_ENV = 'DWNET_MM_NATIVE'


def native_disabled():
    """Whether ``DWNET_MM_NATIVE=0`` turns the native CPU kernels off (the
    Triton GPU kernel has its own switch, ``DWNET_MM_TRITON``).

    Returns:
        bool: True when the layers must not use these kernels.
    """
    return os.environ.get(DISABLE_ENV, '1').strip() == '0'


def native_ops_for(x):
    """The kernels module when they can take the tensor ``x`` (fp32 on the
    CPU, outside tracing and autocast), else None."""
    # Tracing (FLOP counting, ONNX, torch.compile) sees only aten ops.
    if torch.jit.is_tracing() or torch.jit.is_scripting() or \
            torch.compiler.is_compiling() or torch.is_autocast_enabled('cpu'):
        return None
    if x.device.type != 'cpu' or x.dtype != torch.float32:
        return None
    return native_ops()


def build(name='dwnet_mm_cpu', sources=SOURCES):
    """Compile (or reuse the cached build of) the kernels.

    Returns:
        module | None: The extension, or None (with a warning that says why
        and what to do) where it cannot be built or used here.
    """
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        warnings.warn(
            f'dwnet_mm: its CPU kernels are for x86-64, this machine is '
            f'{platform.machine()}; the layers run on PyTorch ops '
            f'(set {DISABLE_ENV}=0 to silence this)')
        return None
    try:
        # Its import logs a CUDA_HOME guess on CUDA-less machines: not ours.
        logger = logging.getLogger('torch.utils.cpp_extension')
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            from torch.utils.cpp_extension import load
        finally:
            logger.setLevel(level)
        # at::parallel_for runs its loop serially in code compiled without
        # OpenMP; linked with it, the kernels join torch's libgomp (the same
        # soname, already loaded) and its thread count.
        openmp = ['-fopenmp'] if torch.backends.openmp.is_available() and \
            platform.system() == 'Linux' else []
        module = load(
            name=name,
            sources=[str(s) for s in sources],
            extra_cflags=['-O3'] + openmp,
            # A copy: torch appends its libraries to this list in place.
            extra_ldflags=list(openmp),
            verbose=False)
    except Exception as error:  # a missing compiler, ninja or header
        warnings.warn(
            'dwnet_mm: could not build its CPU kernels '
            f'({type(error).__name__}: {error}); the layers run on PyTorch '
            'ops, which are slower. Install g++ and ninja to build them, or '
            'set '
            f'{DISABLE_ENV}=0 to skip the build')
        return None
    if not module.cpu_supported():
        warnings.warn(
            'dwnet_mm: this CPU lacks AVX2/FMA, which its CPU kernels need; '
            'the layers run on PyTorch ops')
        return None
    return module


def native_ops():
    """The compiled kernels module, or None where they cannot be used (a
    warning, once per process, says why)."""
    if native_disabled():
        return None
    return _build_once()


_build_once = functools.lru_cache(maxsize=None)(build)

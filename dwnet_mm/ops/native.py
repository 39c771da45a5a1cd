"""Loading the C++ CPU kernels (``csrc/``), compiled once on first use.

torch's extension builder compiles them into its cache
(``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) the
first time a process needs them (about a minute on two cores;
``tools/install_env.sh`` does it at install time) and reuses the build until
the sources change. Without a compiler, on a non-x86 CPU or with
``DWNET_MM_NATIVE=0`` the layers run on PyTorch ops instead (slower on CPUs,
same results).
"""
import functools
import logging
import os
import platform
import warnings
from pathlib import Path

SOURCES = [
    Path(__file__).parent / 'csrc' / name
    for name in ('bindings.cpp', 'depthwise_conv.cpp', 'i_dynamic_conv.cpp')
]
DISABLE_ENV = 'DWNET_MM_NATIVE'


def native_disabled():
    """True when ``DWNET_MM_NATIVE=0`` turns the kernels off."""
    return os.environ.get(DISABLE_ENV, '1').strip() == '0'


def build(name='dwnet_mm_cpu', sources=SOURCES):
    """Compile (or reuse the cached build of) the kernels.

    Returns:
        module | None: The extension, or None (with a warning that says why
        and what to do) where it cannot be built or used here.
    """
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        warnings.warn(
            f'dwnet_mm: its CPU kernels are for x86-64, this machine is '
            f'{platform.machine()}; the depth-wise convs run on PyTorch ops '
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
        module = load(
            name=name,
            sources=[str(s) for s in sources],
            extra_cflags=['-O3'],
            verbose=False)
    except Exception as error:  # a missing compiler, ninja or header
        warnings.warn(
            f'dwnet_mm: could not build its CPU kernels ({type(error).__name__}'
            f': {error}); the depth-wise convs run on PyTorch ops, which are '
            f'slower. Install g++ and ninja to build them, or set '
            f'{DISABLE_ENV}=0 to skip the build')
        return None
    if not module.cpu_supported():
        warnings.warn(
            'dwnet_mm: this CPU lacks AVX2/FMA, which its CPU kernels need; '
            'the depth-wise convs run on PyTorch ops')
        return None
    return module


def native_ops():
    """The compiled kernels module, or None where they cannot be used (a
    warning, once per process, says why)."""
    if native_disabled():
        return None
    return _build_once()


_build_once = functools.lru_cache(maxsize=None)(build)

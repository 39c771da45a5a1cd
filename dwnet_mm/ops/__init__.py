"""The ops of the DWNet layers, on channels-last (N, H, W, C) tensors, each
choosing its backend in one place (:func:`.backend.backend_for`): the native
CPU kernels (C++, ``dwnet_mm._ext``, compiled at install time), the GPU
kernel of the I-Dynamic conv (Triton), or PyTorch's own ops, which are also
the fallback and the ONNX export form:

* the k x k convs of the DW-blocks: :func:`depthwise_conv`,
  :func:`dynamic_depthwise_conv`, :func:`i_dynamic_conv_from_hidden`
  (and :func:`i_dynamic_conv_with_kernels`, NCHW, kernels given);
* the 1x1 convs and MLPs: :func:`linear` and :func:`mlp` (PyTorch's GEMMs).

The switches: :func:`set_native`, :func:`set_triton` (read from
``DWNET_MM_NATIVE`` and ``DWNET_MM_TRITON`` at import) and
:func:`pytorch_ops`.
"""
from .backend import (backend_for, native_ops, pytorch_ops, set_native,
                      set_triton, use_native, use_triton)
from .depthwise import depthwise_conv, dynamic_depthwise_conv
from .export import depthwise_conv_taps, onnx_exporting
from .i_dynamic import (i_dynamic_conv_from_hidden,
                        i_dynamic_conv_with_kernels, interleaved_channels)
from .linear import linear, mlp
from .triton_i_dynamic_conv import (triton_i_dynamic_conv,
                                    triton_i_dynamic_conv_into)

__all__ = [
    'backend_for', 'depthwise_conv', 'depthwise_conv_taps',
    'dynamic_depthwise_conv', 'i_dynamic_conv_from_hidden',
    'i_dynamic_conv_with_kernels', 'interleaved_channels', 'linear', 'mlp',
    'native_ops', 'onnx_exporting', 'pytorch_ops', 'set_native', 'set_triton',
    'triton_i_dynamic_conv', 'triton_i_dynamic_conv_into', 'use_native',
    'use_triton'
]

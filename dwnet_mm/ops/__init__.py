"""The ops of the DWNet layers, on channels-last (N, H, W, C) tensors, each
choosing its backend once per call (:mod:`.dispatch`): native CPU kernels
(C++, compiled on first use), the GPU kernel of the I-Dynamic conv (Triton),
PyTorch ops, or the export form:

* the k x k convs of the DW-blocks: :func:`depthwise_conv`,
  :func:`dynamic_depthwise_conv`, :func:`i_dynamic_conv`
  (and :func:`inhomogeneous_dynamic_conv`, NCHW, kernels given);
* the 1x1 convs and MLPs: :func:`linear` (:func:`linear_relu`,
  :func:`residual_linear`) and :func:`mlp`.
"""
from .depthwise import (depthwise_conv, depthwise_conv_nhwc,
                        native_depthwise_supported, native_nhwc_view)
from .dispatch import exporting, fast_path, needs_autograd, tracing
from .dynamic_depthwise import (SMALL_MAP_ELEMENTS, batched_depthwise_conv,
                                dynamic_depthwise_conv)
from .export import depthwise_conv_taps, onnx_exporting
from .gelu_mlp import (MLP_CHUNK_ELEMENTS, MlpWorkspace, bias_activation_,
                       fused_mlp, fused_mlp_supported, mlp, mlp_chunk_rows,
                       native_mlp_supported, new_workspace)
from .gemm import (LinearWeights, linear, linear_into, linear_relu,
                   matmul_into, native_linear_supported, residual_linear,
                   rows_linear, small_batch_linear)
from .i_dynamic import (i_dynamic_conv, i_dynamic_conv_nhwc,
                        interleaved_channels, native_i_dynamic_supported)
from .i_dynamic_backends import (generate_and_apply_i_dynamic,
                                 i_dynamic_conv_from_hidden,
                                 inhomogeneous_dynamic_conv)
from .native import native_disabled, native_ops, native_ops_for
from .triton_i_dynamic_conv import (triton_disabled, triton_i_dynamic_conv,
                                    triton_i_dynamic_conv_from_features,
                                    triton_i_dynamic_conv_into,
                                    triton_i_dynamic_supported)

__all__ = [
    'MLP_CHUNK_ELEMENTS', 'bias_activation_', 'depthwise_conv_nhwc',
    'depthwise_conv_taps', 'onnx_exporting',
    'fused_mlp', 'fused_mlp_supported', 'mlp', 'i_dynamic_conv_nhwc',
    'interleaved_channels', 'linear_into', 'matmul_into',
    'mlp_chunk_rows',
    'native_depthwise_supported', 'native_disabled',
    'native_i_dynamic_supported', 'native_linear_supported',
    'native_mlp_supported', 'native_nhwc_view',
    'native_ops', 'native_ops_for', 'rows_linear', 'small_batch_linear',
    'triton_disabled', 'triton_i_dynamic_conv',
    'triton_i_dynamic_conv_from_features', 'triton_i_dynamic_conv_into',
    'triton_i_dynamic_supported',
    # The ops and their dispatch predicates.
    'depthwise_conv', 'i_dynamic_conv', 'linear',
    'LinearWeights', 'MlpWorkspace', 'SMALL_MAP_ELEMENTS',
    'batched_depthwise_conv', 'dynamic_depthwise_conv', 'exporting',
    'fast_path', 'generate_and_apply_i_dynamic', 'i_dynamic_conv_from_hidden',
    'inhomogeneous_dynamic_conv', 'linear_relu', 'needs_autograd',
    'new_workspace', 'residual_linear', 'tracing'
]

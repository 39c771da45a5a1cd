"""Native CPU kernels (C++, compiled on first use), the GPU kernel of the
I-Dynamic conv (Triton) and their PyTorch interfaces."""
from .depthwise_conv import (depthwise_conv_nhwc, native_depthwise_supported,
                             native_nhwc_view)
from .export import depthwise_conv_taps, onnx_exporting
from .i_dynamic_conv import (i_dynamic_conv_nhwc, interleaved_channels,
                             native_i_dynamic_supported)
from .mlp import (MLP_CHUNK_ELEMENTS, bias_activation_, fused_mlp,
                  fused_mlp_supported, gelu_mlp, mlp_chunk_rows,
                  native_mlp_supported)
from .native import native_disabled, native_ops, native_ops_for
from .linear import (linear_into, matmul_into, native_linear_supported,
                     rows_linear, small_batch_linear)
from .triton_i_dynamic_conv import (triton_i_dynamic_conv,
                                    triton_i_dynamic_conv_from_features,
                                    triton_i_dynamic_conv_into,
                                    triton_i_dynamic_supported)

__all__ = [
    'MLP_CHUNK_ELEMENTS', 'bias_activation_', 'depthwise_conv_nhwc',
    'depthwise_conv_taps', 'onnx_exporting',
    'fused_mlp', 'fused_mlp_supported', 'gelu_mlp', 'i_dynamic_conv_nhwc',
    'interleaved_channels', 'linear_into', 'matmul_into',
    'mlp_chunk_rows',
    'native_depthwise_supported', 'native_disabled',
    'native_i_dynamic_supported', 'native_linear_supported',
    'native_mlp_supported', 'native_nhwc_view',
    'native_ops', 'native_ops_for', 'rows_linear', 'small_batch_linear',
    'triton_i_dynamic_conv',
    'triton_i_dynamic_conv_from_features', 'triton_i_dynamic_conv_into',
    'triton_i_dynamic_supported'
]

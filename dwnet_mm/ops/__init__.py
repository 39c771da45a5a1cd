"""Native CPU kernels (C++, compiled on first use) and their PyTorch
interfaces."""
from .depthwise_conv import (depthwise_conv_nhwc, native_depthwise_supported,
                             native_nhwc_view)
from .i_dynamic_conv import i_dynamic_conv_nhwc, native_i_dynamic_supported
from .native import native_disabled, native_ops

__all__ = [
    'depthwise_conv_nhwc', 'i_dynamic_conv_nhwc', 'native_depthwise_supported',
    'native_disabled', 'native_i_dynamic_supported', 'native_nhwc_view',
    'native_ops'
]

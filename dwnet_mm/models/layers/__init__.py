from .depthwise_mixer import (DEPTHWISE_TYPES, DepthwiseMixer,
                              build_depthwise_conv)
from .deploy import (ChannelScaleShift, DeployDWNetBlock,
                     FoldedDepthwiseConv2d, FoldedDynamicDepthwiseConv2d,
                     FoldedInhomogeneousDynamicConv2d, bn_scale_shift)
from .dwnet_block import DWNetBlock, DWNetStage, Mlp
from .dynamic_conv import (DynamicDepthwiseConv2d, InhomogeneousDynamicConv2d,
                           inhomogeneous_dynamic_conv)
from .norms import (CenteringCalibratedBatchNorm, LayerNorm2d,
                    TokenBatchNorm, TokenCenteringCalibratedBatchNorm)
from .patch_embed import (PatchEmbed, PatchMerging, channel_norm,
                          channel_norm_nhwc, gather_2x2, pad_to_multiple)
from .squeeze_excitation import SqueezeExcitation

__all__ = [
    'DEPTHWISE_TYPES', 'DepthwiseMixer', 'build_depthwise_conv', 'DWNetBlock',
    'DWNetStage', 'Mlp', 'DynamicDepthwiseConv2d',
    'InhomogeneousDynamicConv2d', 'inhomogeneous_dynamic_conv', 'PatchEmbed',
    'PatchMerging', 'channel_norm', 'pad_to_multiple', 'channel_norm_nhwc',
    'gather_2x2', 'ChannelScaleShift', 'DeployDWNetBlock',
    'FoldedDepthwiseConv2d', 'FoldedDynamicDepthwiseConv2d',
    'FoldedInhomogeneousDynamicConv2d', 'bn_scale_shift',
    'CenteringCalibratedBatchNorm', 'LayerNorm2d', 'TokenBatchNorm',
    'TokenCenteringCalibratedBatchNorm', 'SqueezeExcitation'
]

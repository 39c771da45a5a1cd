from .batchnorm_folding import (ChannelScaleShift, bn_scale_shift,
                                fold_bn_after, fold_bn_before)
from .deploy_block import (DeployDWNetBlock, check_deploy_form,
                           fuse_children)
from .depthwise_mixer import (DEPTHWISE_TYPES, DEPLOY_FORMS, DepthwiseConv2d,
                              DepthwiseConvModule, DepthwiseMixer,
                              FoldedDepthwiseConv2d,
                              SharedDepthwiseConv2d, build_depthwise_conv)
from .dwnet_block import DWNetBlock, DWNetStage, Mlp
from .dynamic_conv import (DynamicDepthwiseConv2d,
                           FoldedDynamicDepthwiseConv2d,
                           FoldedInhomogeneousDynamicConv2d,
                           InhomogeneousDynamicConv2d)
from .norms import (CenteringCalibratedBatchNorm, LayerNorm2d,
                    TokenBatchNorm, TokenCenteringCalibratedBatchNorm)
from .patch_embed import (PatchEmbed, PatchMerging, channel_norm_nhwc,
                          gather_2x2, pad_to_multiple)
from .squeeze_excitation import SqueezeExcitation

__all__ = [
    'DEPTHWISE_TYPES', 'DEPLOY_FORMS', 'DepthwiseConvModule', 'DepthwiseMixer',
    'build_depthwise_conv', 'DWNetBlock', 'DWNetStage', 'Mlp',
    'DynamicDepthwiseConv2d', 'InhomogeneousDynamicConv2d', 'DepthwiseConv2d',
    'SharedDepthwiseConv2d', 'PatchEmbed', 'PatchMerging', 'pad_to_multiple',
    'channel_norm_nhwc', 'gather_2x2', 'ChannelScaleShift', 'DeployDWNetBlock',
    'check_deploy_form', 'fuse_children',
    'FoldedDepthwiseConv2d', 'FoldedDynamicDepthwiseConv2d',
    'FoldedInhomogeneousDynamicConv2d', 'bn_scale_shift', 'fold_bn_after',
    'fold_bn_before', 'CenteringCalibratedBatchNorm', 'LayerNorm2d',
    'TokenBatchNorm', 'TokenCenteringCalibratedBatchNorm', 'SqueezeExcitation'
]

"""Norm layers of the paper's normalisation ablation (Table 9).

Registered in mmengine's root registry, so ``norm_cfg=dict(type=...)``
finds them from mmpretrain, mmdet and mmseg:

- ``'LN2d'``: LayerNorm over the channels of an (N, C, H, W) map.
- ``'CCBN'``: centering-calibrated BatchNorm ([15] in the paper) on
  (N, C, ...) tensors.
- ``'TokenBN'``, ``'TokenCCBN'``: the same BatchNorms on (N, L, C) tokens,
  for Swin Transformer's blocks.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm


@MODELS.register_module('LN2d')
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W) maps.

    Args:
        num_channels (int): Number of channels.
        **kwargs: Passed on to :class:`torch.nn.LayerNorm` (``eps``,
            ``elementwise_affine``).
    """

    def __init__(self, num_channels, **kwargs):
        super().__init__(num_channels, **kwargs)

    def forward(self, x):
        # Free on the DWNet blocks' channels-last maps.
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape,
                            self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


@MODELS.register_module('CCBN')
class CenteringCalibratedBatchNorm(_BatchNorm):
    """BatchNorm with the centering calibration of Representative BatchNorm
    (Gao et al., CVPR 2021): each sample's per-channel mean, weighted by a
    learned per-channel factor, is added before BatchNorm centres the batch:

        y = BN(x + w * mean_{spatial}(x))

    ``w`` starts at zero, so a new layer is a BatchNorm. Only the centering
    calibration is used, as the paper's "centering calibrated BN" names it
    (the scaling calibration of the same work is left out).

    Args:
        num_features (int): Number of channels C of (N, C, ...) inputs.
        **kwargs: Passed on to BatchNorm (``eps``, ``momentum``, ``affine``,
            ``track_running_stats``).
    """

    def __init__(self, num_features, **kwargs):
        super().__init__(num_features, **kwargs)
        self.centering_weight = nn.Parameter(torch.zeros(num_features))

    def _check_input_dim(self, x):
        if x.dim() < 3:
            raise ValueError('CenteringCalibratedBatchNorm needs (N, C, ...) '
                             f'inputs with spatial dims, got {tuple(x.shape)}')

    def forward(self, x):
        dims = tuple(range(2, x.dim()))
        shape = (1, -1) + (1, ) * len(dims)
        x = x + self.centering_weight.view(shape) * x.mean(dims, keepdim=True)
        return super().forward(x)


class OnTokens:
    """Mixin: a layer's (N, C, L) forward on (N, L, C) tokens."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


@MODELS.register_module('TokenBN')
class TokenBatchNorm(OnTokens, nn.BatchNorm1d):
    """BatchNorm over the channels of (N, L, C) tokens.

    Args:
        num_features (int): Number of channels C.
        **kwargs: Passed on to :class:`torch.nn.BatchNorm1d`.
    """


@MODELS.register_module('TokenCCBN')
class TokenCenteringCalibratedBatchNorm(OnTokens,
                                        CenteringCalibratedBatchNorm):
    """:class:`CenteringCalibratedBatchNorm` on (N, L, C) tokens; the
    calibration uses each sample's mean over its L tokens.

    Args:
        num_features (int): Number of channels C.
        **kwargs: Passed on to BatchNorm.
    """

"""Stem and between-stage downsampling (Swin layout)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer


def pad_to_multiple(x, multiple):
    """Zero-pad an NCHW tensor on the bottom/right to a multiple of size."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def channel_norm(norm, x):
    """Apply ``norm`` over the channels of an NCHW tensor.

    BatchNorm takes NCHW directly; LayerNorm-like norms take channels last.
    """
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return norm(x)
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Stem: non-overlapping patch projection followed by a norm.

    Inputs whose size is not a multiple of the patch size are zero-padded on
    the bottom/right.

    Args:
        in_channels (int): Input channels. Defaults to 3.
        embed_dims (int): Output channels. Defaults to 96.
        patch_size (int): Patch size and stride. Defaults to 4.
        norm_cfg (dict): Config of the norm. Defaults to ``dict(type='LN')``.
    """

    def __init__(self, in_channels=3, embed_dims=96, patch_size=4,
                 norm_cfg=dict(type='LN')):
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(
            in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, x):
        x = self.projection(pad_to_multiple(x, self.patch_size))
        return channel_norm(self.norm, x)


class PatchMerging(nn.Module):
    """Swin's downsampling: 2x2 neighbours -> 4C channels -> norm -> 2C.

    The neighbours are concatenated in the (row, column) offset order (0, 0),
    (1, 0), (0, 1), (1, 1), as in Swin and the released DWNet weights; odd
    sizes are zero-padded first.

    Args:
        in_channels (int): Input channels C.
        out_channels (int, optional): Output channels. Defaults to ``2 * C``.
        norm_cfg (dict): Config of the norm. Defaults to ``dict(type='LN')``.
    """

    def __init__(self, in_channels, out_channels=None,
                 norm_cfg=dict(type='LN')):
        super().__init__()
        out_channels = out_channels or 2 * in_channels
        self.norm = build_norm_layer(norm_cfg, 4 * in_channels)[1]
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x):
        x = pad_to_multiple(x, 2).permute(0, 2, 3, 1)
        x = torch.cat([
            x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
            x[:, 1::2, 1::2]
        ], dim=-1)
        return self.reduction(self.norm(x)).permute(0, 3, 1, 2)

"""Stem and between-stage downsampling (Swin layout)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch.nn.modules.batchnorm import _BatchNorm

from dwnet_mm.ops import linear, onnx_exporting
from .batchnorm_folding import fold_bn_after, fold_bn_before, param_like


def pad_to_multiple(x, multiple):
    """Zero-pad an NCHW tensor on the bottom/right to a multiple of size."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    # An exported graph pads (by 0 or more) whatever size it is given.
    if onnx_exporting() or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def _takes_nchw(norm):
    # LayerNorm2d (dwnet_mm's or mmpretrain's 'LN2d') is a LayerNorm that
    # takes NCHW maps.
    return isinstance(norm, (_BatchNorm, nn.GroupNorm)
                      ) or type(norm).__name__ == 'LayerNorm2d'


def channel_norm_nhwc(norm, x):
    """Apply ``norm`` over the channels of an NHWC tensor."""
    if _takes_nchw(norm):
        return norm(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return norm(x)


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
        """(N, C, H, W) image -> (N, H/p, W/p, D) features."""
        p = self.patch_size
        x = pad_to_multiple(x, p)
        B, C, H, W = x.shape
        # The strided conv as one matmul over the gathered patches, whose
        # output is already channels-last.
        patches = x.reshape(B, C, H // p, p, W // p, p).permute(
            0, 2, 4, 1, 3, 5).reshape(B, H // p, W // p, C * p * p)
        x = linear(patches, self.projection.weight.flatten(1),
                   self.projection.bias)
        return channel_norm_nhwc(self.norm, x)

    def fuse(self):
        """Fold a BatchNorm norm into the projection (LayerNorms stay).

        Returns:
            PatchEmbed: self, in its deploy form.
        """
        return _fold_norm(self, self.projection, fold_bn_after)


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
        """(N, H, W, C) -> (N, H/2, W/2, 2C)."""
        return linear(channel_norm_nhwc(self.norm, gather_2x2(x)),
                      self.reduction.weight, self.reduction.bias)

    def fuse(self):
        """Fold a BatchNorm norm into the reduction (LayerNorms stay).

        Returns:
            PatchMerging: self, in its deploy form.
        """
        return _fold_norm(self, self.reduction, fold_bn_before)


@torch.no_grad()
def _fold_norm(module, layer, fold):
    """Fold ``module.norm``, where it is a BatchNorm, into ``layer`` with
    ``fold`` (:func:`fold_bn_after` or :func:`fold_bn_before`).

    Returns:
        nn.Module: ``module``.
    """
    if isinstance(module.norm, _BatchNorm):
        weight, bias = fold(layer.weight, layer.bias, module.norm)
        layer.weight.copy_(weight)
        layer.bias = param_like(bias, layer.weight)
        module.norm = nn.Identity()
    return module


def gather_2x2(x):
    """(N, H, W, C) -> (N, H/2, W/2, 4C): the 2x2 neighbours of each output
    position, in the order (0, 0), (1, 0), (0, 1), (1, 1) of (row, column)
    offsets; odd sizes are zero-padded on the bottom/right first."""
    B, H, W, C = x.shape
    # An exported graph pads (by 0 or 1) whatever size it is given.
    if onnx_exporting() or H % 2 or W % 2:
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        H, W = H + H % 2, W + W % 2
    # Offsets (row, col) land at 2 * col + row: column-major in the pair.
    return x.reshape(B, H // 2, 2, W // 2, 2, C).permute(
        0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)

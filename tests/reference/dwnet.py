"""DWNet written again from ``shared/REFERENCE.md`` section 1, as plainly as
possible: NCHW throughout, ``nn.Conv2d`` for the 1x1 and depth-wise convs,
a grouped ``F.conv2d`` for the per-image kernels and ``F.unfold`` for
I-Dynamic. It is the oracle that dwnet_mm's optimised paths are compared
with, so it imports nothing from ``dwnet_mm`` and is meant to be obviously
correct rather than fast.

Parameter names are the authors' (REFERENCE.md section 5), so an
authors'-layout checkpoint loads into it as it is.

The paper's ablation options (never released by the authors; written here
from the paper's text): squeeze-and-excitation after the depth-wise
conv-BN-ReLU (Table 6), depth-wise kernels shared by groups of channels
(Table 10), LayerNorm or centering-calibrated BN in place of the blocks'
BatchNorms (Table 9), an extra residual depth-wise conv + norm (+ SE)
between the DW-block and the MLP (Table 12).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def pad_bottom_right(x, multiple):
    """Zero-pad (N, C, H, W) on the bottom/right to a multiple of size."""
    return F.pad(x, (0, -x.shape[-1] % multiple, 0, -x.shape[-2] % multiple))


def same_pad(x, k):
    """Pad for a k x k window at offsets -k//2 .. k-1-k//2 (the "same"
    window; for even k one more row/column before than after)."""
    before, after = k // 2, k - 1 - k // 2
    return F.pad(x, (before, after, before, after))


def layer_norm_2d(norm, x):
    """A LayerNorm over the channels of an NCHW tensor (kept contiguous:
    convs would carry a channels-last layout on to the framework)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of NCHW maps."""

    def forward(self, x):
        return layer_norm_2d(super().forward, x)


class CenteringCalibratedBN(nn.BatchNorm2d):
    """Representative BN's centering calibration (Gao et al. 2021):
    BN(x + w * per-sample channel mean of x)."""

    def __init__(self, dim):
        super().__init__(dim)
        self.centering_weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        means = x.mean(dim=(2, 3), keepdim=True)
        return super().forward(x + self.centering_weight[:, None, None] *
                               means)


NORMS = {'BN': nn.BatchNorm2d, 'LN': ChannelLayerNorm,
         'CCBN': CenteringCalibratedBN}


class SE(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean over H, W of x))))."""

    def __init__(self, dim, ratio):
        super().__init__()
        hidden = max(1, round(dim * ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class PatchEmbed(nn.Module):

    def __init__(self, in_chans, dim, patch_size=4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(pad_bottom_right(x, self.patch_size))
        return layer_norm_2d(self.norm, x)


class PatchMerging(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = pad_bottom_right(x, 2)
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2],
                       x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=1)
        x = self.reduction(self.norm(x.permute(0, 2, 3, 1)))
        return x.permute(0, 3, 1, 2).contiguous()


class StaticDW(nn.Conv2d):
    """k x k depth-wise conv with bias."""

    def __init__(self, dim, k):
        super().__init__(dim, dim, k, groups=dim, bias=True)

    def forward(self, x):
        return super().forward(same_pad(x, self.kernel_size[0]))


class SharedStaticDW(nn.Module):
    """k x k depth-wise conv whose kernel g serves channels
    g * C/G .. (g+1) * C/G - 1; bias per channel."""

    def __init__(self, dim, k, weight_groups):
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.zeros(weight_groups, 1, k, k))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        C = x.shape[1]
        kernel_of_channel = torch.arange(C) * self.weight.shape[0] // C
        return F.conv2d(same_pad(x, self.k), self.weight[kernel_of_channel],
                        self.bias, groups=C)


class ExtraDW(nn.Module):
    """Table 12's extra depth-wise conv: k x k DW conv -> norm [-> SE]."""

    def __init__(self, dim, k, norm, se_ratio):
        super().__init__()
        self.conv = StaticDW(dim, k)
        self.bn = NORMS[norm](dim)
        self.se = SE(dim, se_ratio) if se_ratio else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.se(x) if self.se is not None else x


class DynamicDW(nn.Module):
    """One k x k kernel per image and channel, predicted from the pooled
    input; a learned static bias."""

    def __init__(self, dim, k, reduction=4):
        super().__init__()
        self.k = k
        self.conv1 = nn.Conv2d(dim, dim // reduction, 1, bias=False)
        self.bn = nn.BatchNorm2d(dim // reduction)
        self.conv2 = nn.Conv2d(dim // reduction, dim * k * k, 1)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        B, C, H, W = x.shape
        context = x.mean(dim=(2, 3), keepdim=True)
        kernel = self.conv2(F.relu(self.bn(self.conv1(context))))
        # The batch folded into the channels: one grouped conv, B * C groups.
        padded = same_pad(x, self.k)
        out = F.conv2d(padded.reshape(1, B * C, *padded.shape[2:]),
                       kernel.reshape(B * C, 1, self.k, self.k),
                       self.bias.repeat(B), groups=B * C)
        return out.reshape(B, C, H, W)


class InhomogeneousDynamicDW(nn.Module):
    """A k x k kernel per position, shared by each group of channels."""

    def __init__(self, dim, k, groups, reduction=4):
        super().__init__()
        self.k, self.groups = k, groups
        self.conv1 = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 1),
            nn.BatchNorm2d(dim // reduction), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(dim // reduction,
                                             k * k * groups, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        G, kk = self.groups, self.k * self.k
        weight = self.conv2(self.conv1(x)).reshape(B, G, 1, kk, H, W)
        patches = F.unfold(same_pad(x, self.k), self.k)
        patches = patches.reshape(B, G, C // G, kk, H, W)
        return (patches * weight).sum(dim=3).reshape(B, C, H, W)


class DWBlock(nn.Module):
    """1x1 conv-BN-ReLU, k x k depth-wise conv-BN-ReLU, 1x1 conv-BN."""

    def __init__(self, dim, conv_type, k, groups, norm='BN', se_ratio=0.,
                 weight_groups=None):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1, bias=False)
        self.bn0 = NORMS[norm](dim)
        if weight_groups is not None:
            self.conv = SharedStaticDW(dim, k, weight_groups)
        elif conv_type == 'static':
            self.conv = StaticDW(dim, k)
        elif conv_type == 'dynamic':
            self.conv = DynamicDW(dim, k)
        else:
            self.conv = InhomogeneousDynamicDW(dim, k, groups)
        self.bn = NORMS[norm](dim)
        self.se = SE(dim, se_ratio) if se_ratio else None
        self.conv2 = nn.Conv2d(dim, dim, 1, bias=False)
        self.bn2 = NORMS[norm](dim)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        x = F.relu(self.bn(self.conv(x)))
        if self.se is not None:
            x = self.se(x)
        return self.bn2(self.conv2(x))


class Mlp(nn.Module):

    def __init__(self, dim, ratio=4):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return self.fc2(F.gelu(self.fc1(x))).permute(0, 3, 1, 2).contiguous()


class Block(nn.Module):
    """x + DW-block(x), then x + MLP(BN(x)); no stochastic depth (the
    comparisons run with drop_path 0)."""

    def __init__(self, dim, conv_type, k, groups, pad_to_window, norm='BN',
                 se_ratio=0., weight_groups=None, extra_dw=False,
                 extra_dw_se_ratio=0.):
        super().__init__()
        self.k, self.pad_to_window = k, pad_to_window
        self.attn2conv = DWBlock(dim, conv_type, k, groups, norm, se_ratio,
                                 weight_groups)
        self.extra = ExtraDW(dim, k, norm,
                             extra_dw_se_ratio) if extra_dw else None
        self.bn = NORMS[norm](dim)
        self.mlp = Mlp(dim)

    def forward(self, x):
        H, W = x.shape[-2:]
        if self.pad_to_window:
            y = self.attn2conv(pad_bottom_right(x, self.k))[:, :, :H, :W]
        else:
            y = self.attn2conv(x)
        x = x + y
        if self.extra is not None:
            x = x + self.extra(x)
        return x + self.mlp(self.bn(x))


class Stage(nn.Module):

    def __init__(self, dim, depth, downsample, **block_args):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, **block_args) for _ in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None


class ReferenceDWNet(nn.Module):
    """The whole backbone.

    Args:
        channels (list[int]): Stage widths.
        depths (list[int]): Blocks per stage.
        conv_type (str): 'static', 'dynamic' or 'i_dynamic'.
        kernel_size (int): k. Defaults to 7.
        i_dynamic_groups (int): I-Dynamic channel groups. Defaults to 32.
        pad_to_window (bool): Pad each block's input to a multiple of k
            before the DW-block. Defaults to False.
        dense (bool): Return the four stages' maps, each through its own
            BatchNorm (``norm0..3``), instead of the classification vector
            (LayerNorm ``norm``, then global average pooling).
            Defaults to False.
        norm (str): The blocks' norms (and the dense output norms): 'BN',
            'LN' or 'CCBN'. Defaults to 'BN'.
        se_ratio (float): SE in the DW-block; 0 for none. Defaults to 0.
        dw_weight_groups (list[int], optional): Shared depth-wise kernels
            per stage. Defaults to None.
        extra_dw (bool): The extra residual depth-wise conv. Defaults to
            False.
        extra_dw_se_ratio (float): SE after it. Defaults to 0.
    """

    def __init__(self, channels, depths, conv_type='static', kernel_size=7,
                 i_dynamic_groups=32, pad_to_window=False, dense=False,
                 norm='BN', se_ratio=0., dw_weight_groups=None,
                 extra_dw=False, extra_dw_se_ratio=0.):
        super().__init__()
        self.dense = dense
        self.patch_embed = PatchEmbed(3, channels[0])
        weight_groups = dw_weight_groups or [None] * len(depths)
        self.layers = nn.ModuleList(
            Stage(dim, depth, downsample=i < len(depths) - 1,
                  conv_type=conv_type, k=kernel_size,
                  groups=i_dynamic_groups, pad_to_window=pad_to_window,
                  norm=norm, se_ratio=se_ratio,
                  weight_groups=weight_groups[i], extra_dw=extra_dw,
                  extra_dw_se_ratio=extra_dw_se_ratio)
            for i, (dim, depth) in enumerate(zip(channels, depths)))
        if dense:
            for i, dim in enumerate(channels):
                self.add_module(f'norm{i}', NORMS[norm](dim))
        else:
            self.norm = nn.LayerNorm(channels[-1])

    def forward(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            for block in stage.blocks:
                x = block(x)
            if self.dense:
                outs.append(getattr(self, f'norm{i}')(x))
            if stage.downsample is not None:
                x = stage.downsample(x)
        if self.dense:
            return tuple(outs)
        return (layer_norm_2d(self.norm, x).mean(dim=(2, 3)), )

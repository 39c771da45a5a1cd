"""One DWNet block and one stage of blocks."""
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from .depthwise_mixer import DepthwiseMixer
from .patch_embed import pad_to_multiple


class Mlp(nn.Module):
    """Linear(C, rC) -> GELU -> Linear(rC, C) over the channels of NCHW.

    Args:
        channels (int): Input and output channels.
        mlp_ratio (float): Hidden width ratio. Defaults to 4.
    """

    def __init__(self, channels, mlp_ratio=4.):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return self.fc2(self.act(self.fc1(x))).permute(0, 3, 1, 2)


class DWNetBlock(nn.Module):
    """``x + DW-block(x)``, then ``x + MLP(norm(x))``, with stochastic depth.

    Args:
        channels (int): Number of channels.
        conv_type (str): 'static', 'dynamic' or 'i_dynamic'.
            Defaults to 'static'.
        kernel_size (int): Depth-wise kernel size. Defaults to 7.
        groups (int): Channel groups of 'i_dynamic'. Defaults to 32.
        mlp_ratio (float): MLP hidden width ratio. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        pad_to_window (bool): Zero-pad the input to a multiple of
            ``kernel_size`` before the DW-block and crop afterwards, as the
            released detection/segmentation backbone does. Defaults to False.
        norm_cfg (dict): Config of the norm layers.
            Defaults to ``dict(type='BN')``.
        with_cp (bool): Use gradient checkpointing. Defaults to False.
    """

    def __init__(self, channels, conv_type='static', kernel_size=7, groups=32,
                 mlp_ratio=4., drop_path_rate=0., pad_to_window=False,
                 norm_cfg=dict(type='BN'), with_cp=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.pad_to_window = pad_to_window
        self.with_cp = with_cp
        self.mixer = DepthwiseMixer(channels, conv_type, kernel_size, groups,
                                    norm_cfg)
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.mlp = Mlp(channels, mlp_ratio)
        self.drop_path = DropPath(
            drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def mix(self, x):
        if not self.pad_to_window:
            return self.mixer(x)
        H, W = x.shape[-2:]
        return self.mixer(pad_to_multiple(x, self.kernel_size))[..., :H, :W]

    def _forward(self, x):
        x = x + self.drop_path(self.mix(x))
        return x + self.drop_path(self.mlp(self.norm(x)))

    def forward(self, x):
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class DWNetStage(nn.Module):
    """A sequence of :class:`DWNetBlock` followed by optional downsampling.

    Args:
        channels (int): Number of channels of the blocks.
        depth (int): Number of blocks.
        drop_path_rates (Sequence[float]): Stochastic depth rate per block.
        downsample (nn.Module, optional): Applied after the blocks, e.g.
            :class:`PatchMerging`. Defaults to None.
        **block_kwargs: Passed on to :class:`DWNetBlock`.
    """

    def __init__(self, channels, depth, drop_path_rates, downsample=None,
                 **block_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList([
            DWNetBlock(channels, drop_path_rate=drop_path_rates[i],
                       **block_kwargs) for i in range(depth)
        ])
        self.downsample = downsample

    def forward(self, x):
        """Return the stage output and the downsampled input of the next."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample else x)

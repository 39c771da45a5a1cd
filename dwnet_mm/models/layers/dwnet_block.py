"""One DWNet block and one stage of blocks."""
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from torch.nn.modules.batchnorm import _BatchNorm

from dwnet_mm.ops import mlp
from .deploy_block import DeployDWNetBlock
from .depthwise_mixer import DepthwiseConv2d, DepthwiseMixer
from .patch_embed import pad_to_multiple
from .squeeze_excitation import SqueezeExcitation


@contextmanager
def frozen_bn_statistics(module):
    """Leave every BatchNorm's running statistics (and
    ``num_batches_tracked``) of ``module`` as they are.

    Gradient checkpointing runs the forward a second time in the backward
    pass; without this, that recomputation would update the statistics a
    second time per step. The recomputation updates throw-away copies, so it
    normalises and saves exactly what the first forward did.
    """
    names = ('running_mean', 'running_var', 'num_batches_tracked')
    saved = [(norm, {n: getattr(norm, n) for n in names})
             for norm in module.modules()
             if isinstance(norm, _BatchNorm) and norm.track_running_stats]
    for norm, buffers in saved:
        for name, buffer in buffers.items():
            setattr(norm, name, buffer.clone())
    try:
        yield
    finally:
        for norm, buffers in saved:
            for name, buffer in buffers.items():
                setattr(norm, name, buffer)


class Mlp(nn.Module):
    """Linear(C, rC) -> GELU -> Linear(rC, C) over the channels of NCHW.

    On fp32 CPU tensors it runs in cache-sized row chunks with the native
    GELU (:func:`dwnet_mm.ops.mlp`), else on PyTorch ops.

    Args:
        channels (int): Input and output channels.
        mlp_ratio (float): Hidden width ratio. Defaults to 4.
    """

    def __init__(self, channels, mlp_ratio=4.):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return mlp(x, self.fc1, self.fc2).permute(0, 3, 1, 2)


class DepthwiseConvNorm(nn.Module):
    """k x k depth-wise conv (with bias) -> norm [-> squeeze-and-excitation]:
    the extra residual depth-wise conv of the paper's Table 12, between the
    DW-block and the MLP.

    Args:
        channels (int): Number of channels.
        kernel_size (int): k. Defaults to 7.
        norm_cfg (dict): Config of the norm. Defaults to ``dict(type='BN')``.
        se_ratio (float): Squeeze-and-excitation after the norm with this
            hidden width ratio; 0 for none. Defaults to 0.
    """

    def __init__(self, channels, kernel_size=7, norm_cfg=dict(type='BN'),
                 se_ratio=0.):
        super().__init__()
        self.conv = DepthwiseConv2d(channels, kernel_size)
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.se = SqueezeExcitation(channels, se_ratio) if se_ratio else None

    def forward(self, x):
        x = self.norm(self.conv(x))
        return x if self.se is None else self.se(x)


class DWNetBlock(nn.Module):
    """``x + DW-block(x)``, then ``x + MLP(norm(x))``, with stochastic depth.

    Args:
        channels (int): Number of channels.
        conv_type (str): 'static', 'dynamic' or 'i_dynamic'.
            Defaults to 'static'.
        kernel_size (int): Depth-wise kernel size. Defaults to 7.
        i_dynamic_groups (int): Channel groups of 'i_dynamic'.
            Defaults to 32.
        mlp_ratio (float): MLP hidden width ratio. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        pad_to_window (bool): Zero-pad the input to a multiple of
            ``kernel_size`` before the DW-block and crop afterwards, as the
            released detection/segmentation backbone does. Defaults to False.
        norm_cfg (dict): Config of the norm layers.
            Defaults to ``dict(type='BN')``.
        with_cp (bool): Use gradient checkpointing. Defaults to False.
        se_ratio (float): Squeeze-and-excitation in the DW-block (see
            :class:`DepthwiseMixer`); 0 for none. Defaults to 0.
        dw_weight_groups (int, optional): Depth-wise kernels shared across
            channels in this many groups. Defaults to None.
        extra_dw (bool): Add ``x + DepthwiseConvNorm(x)`` between the
            DW-block and the MLP (paper Table 12). Defaults to False.
        extra_dw_se_ratio (float): Squeeze-and-excitation after the extra
            depth-wise conv; 0 for none. Defaults to 0.
    """

    def __init__(self, channels, conv_type='static', kernel_size=7,
                 i_dynamic_groups=32, mlp_ratio=4., drop_path_rate=0.,
                 pad_to_window=False, norm_cfg=dict(type='BN'), with_cp=False,
                 se_ratio=0., dw_weight_groups=None, extra_dw=False,
                 extra_dw_se_ratio=0.):
        super().__init__()
        self.kernel_size = kernel_size
        self.pad_to_window = pad_to_window
        self.with_cp = with_cp
        self.mixer = DepthwiseMixer(channels, conv_type, kernel_size,
                                    i_dynamic_groups, norm_cfg, se_ratio,
                                    dw_weight_groups)
        if extra_dw_se_ratio and not extra_dw:
            raise ValueError('extra_dw_se_ratio needs extra_dw=True')
        self.extra_dw = DepthwiseConvNorm(
            channels, kernel_size, norm_cfg,
            extra_dw_se_ratio) if extra_dw else None
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
        x = self._residual(x, self.mix(x))
        if self.extra_dw is not None:
            x = self._residual(x, self.extra_dw(x))
        return self._residual(x, self.mlp(self.norm(x)))

    def _residual(self, x, y):
        """``x + drop_path(y)`` in one pass (mmcv's DropPath semantics:
        each sample's ``y`` is dropped with probability ``drop_prob`` and
        otherwise scaled by ``1 / (1 - drop_prob)``)."""
        drop_prob = getattr(self.drop_path, 'drop_prob', 0.)
        if not drop_prob or not self.drop_path.training:
            return x + y
        keep_prob = 1 - drop_prob
        shape = (x.shape[0], ) + (1, ) * (x.dim() - 1)
        scale = (keep_prob + torch.rand(shape, dtype=x.dtype,
                                        device=x.device)).floor_()
        return torch.addcmul(x, y, scale.div_(keep_prob))

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C).

        The layers run on the (N, C, H, W) view of the same memory
        (channels-last), so the permutes copy nothing.
        """
        x = x.permute(0, 3, 1, 2)
        if self.with_cp and x.requires_grad:
            x = cp.checkpoint(
                self._forward, x, use_reentrant=False,
                context_fn=lambda: (nullcontext(), frozen_bn_statistics(self)))
        else:
            x = self._forward(x)
        return x.permute(0, 2, 3, 1)

    def fuse(self):
        """The deploy form of this block (eval semantics): a
        :class:`DeployDWNetBlock` with every BatchNorm folded.

        Raises:
            ValueError: For the ablation layers (SE, the extra depth-wise
                conv, shared depth-wise kernels), which have no deploy form.
        """
        if self.extra_dw is not None or self.mixer.se is not None or \
                not self.mixer.depthwise.has_deploy_form:
            raise ValueError('the ablation layers of a DWNetBlock (SE, '
                             'extra_dw, dw_weight_groups) have no deploy form')
        return DeployDWNetBlock.from_block(self)


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
        """Return the stage output and the downsampled input of the next
        stage, (N, H, W, C) tensors."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample else x)

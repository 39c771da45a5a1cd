import warnings
from copy import deepcopy

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ...converters import load_dwnet_checkpoint, state_dict_for
from ..layers import (DEPTHWISE_TYPES, ChannelScaleShift, DWNetStage,
                      PatchEmbed, PatchMerging, channel_norm_nhwc,
                      check_deploy_form, fuse_children)


# Registered in mmengine's root registry, so that mmpretrain, mmdet and mmseg
# (all children of it) find `type='DWNet'`, and `mmpretrain.DWNet` resolves.
@MODELS.register_module()
class DWNet(BaseModule):
    """DWNet: Swin Transformer with window attention replaced by
    (dynamic) depth-wise convolution.

    A PyTorch implementation of `On the Connection between Local Attention
    and Dynamic Depth-wise Convolution <https://arxiv.org/abs/2106.04263>`_
    (ICLR 2022).

    Args:
        arch (str | dict): Architecture. A name in :attr:`arch_settings`
            ('tiny'/'t', 'base'/'b'), or a dict with keys ``channels``
            (4 stage widths) and ``depths`` (4 block counts).
            Defaults to 'tiny'.
        conv_type (str): Spatial mixing of the blocks: 'static' (depth-wise
            conv), 'dynamic' (kernel per image, D-DWNet) or 'i_dynamic'
            (kernel per position and channel group). Defaults to 'static'.
        kernel_size (int): Depth-wise kernel size ("window size").
            Defaults to 7.
        i_dynamic_groups (int): Channel groups of 'i_dynamic'.
            Defaults to 32.
        in_channels (int): Input image channels. Defaults to 3.
        patch_size (int): Stem patch size. Defaults to 4.
        mlp_ratio (float): MLP hidden width ratio. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate of the last block;
            rates grow linearly from 0. Defaults to 0.
        out_indices (int | Sequence[int], optional): Stages to output;
            negative indices count from the end. Defaults to None: every
            stage, ``(0, 1, 2, 3)``, what FPN and UPerHead take.
        out_type (str): 'featmap' for dense prediction (norm on each NCHW
            map, at strides 4, 8, 16, 32), as mmdet's and mmseg's backbones
            and mmpretrain's Swin return, or 'avg_featmap' for
            classification with no neck (norm, then global average
            pooling: (N, C_i) per stage; the classification configs set it
            with ``out_indices=-1``). Defaults to 'featmap'. Built in the
            'mmdet' or 'mmseg' scope, 'avg_featmap' warns: FPN and UPerHead
            fail on pooled vectors.
        frozen_stages (int): Freeze (stop gradient, eval mode) the stem when
            >= 0, and stages ``0 .. frozen_stages - 1`` with their
            downsampling and output norms when >= 1, as Swin in mmdet/mmseg.
            -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep all BatchNorm layers in eval mode during
            training. Defaults to False.
        with_cp (bool): Gradient checkpointing per block. Defaults to False.
        pad_to_window (bool): Pad each block's input to a multiple of
            ``kernel_size`` before the DW-block, as the authors' released
            detection/segmentation backbone does; needed to reproduce those
            weights exactly. Defaults to False.
        norm_cfg (dict): Norm of the blocks (and of the dense output norms).
            Defaults to ``dict(type='BN')``.
        stem_norm_cfg (dict): Norm of the stem and patch merging.
            Defaults to ``dict(type='LN')``.
        out_norm_cfg (dict, optional): Norm of the outputs. Defaults to LN
            for 'avg_featmap' and ``norm_cfg`` for 'featmap'.
        init_cfg (dict | list[dict], optional): Initialization config. A
            ``Pretrained`` config accepts dwnet_mm checkpoints and the
            authors' released ones. Defaults to truncated-normal Linear
            weights.
        pretrained (str, optional): Deprecated, as in mmdet/mmseg backbones:
            a checkpoint path, same as ``init_cfg=dict(type='Pretrained',
            checkpoint=pretrained)``. Defaults to None.
        deploy (bool): Build the deploy (inference) form directly, as
            :meth:`switch_to_deploy` leaves it; its state dict is that of a
            deployed model. Training-form checkpoints still load into it
            (they are folded on loading). Defaults to False.
        se_ratio (float): Ablation (Table 6): squeeze-and-excitation after
            each depth-wise conv-norm-ReLU, with this hidden width ratio
            (1/16 gives the paper's parameters); 0 for none. Defaults to 0.
        extra_dw (bool): Ablation (Table 12): an extra residual k x k
            depth-wise conv + norm before each MLP. Defaults to False.
        extra_dw_se_ratio (float): Ablation (Table 12): SE after the extra
            depth-wise conv; 0 for none. Defaults to 0.
        dw_weight_groups (int | Sequence[int], optional): Ablation
            (Table 10, 'static' only): depth-wise kernels shared across
            channels in this many groups per stage, as Swin's heads
            (``(3, 6, 12, 24)`` for tiny). Defaults to None.

    The ablation options and norms other than BatchNorm (``norm_cfg``
    ``'LN2d'`` or ``'CCBN'``, paper Table 9) have no deploy form:
    ``deploy=True`` and :meth:`switch_to_deploy` refuse them. Their
    training form exports to ONNX.

    Note:
        Layout contract: every tensor DWNet returns is a standard
        contiguous tensor, (N, C_i, H_i, W_i) maps for 'featmap' and
        (N, C_i) vectors for 'avg_featmap'. Inside, the blocks keep their
        activations channels-last (NHWC memory) and run their 1x1 convs as
        matmuls; that layout never leaves the backbone, because compiled
        ops downstream (mmcv's RoIAlign among them) read ``data_ptr()`` as
        contiguous NCHW without looking at the strides.
    """
    arch_settings = {
        **dict.fromkeys(['t', 'tiny'], {
            'channels': [96, 192, 384, 768],
            'depths': [2, 2, 6, 2]
        }),
        **dict.fromkeys(['b', 'base'], {
            'channels': [128, 256, 512, 1024],
            'depths': [2, 2, 18, 2]
        }),
    }
    OUT_TYPES = ('avg_featmap', 'featmap')

    def __init__(self,
                 arch='tiny',
                 conv_type='static',
                 kernel_size=7,
                 i_dynamic_groups=32,
                 in_channels=3,
                 patch_size=4,
                 mlp_ratio=4.,
                 drop_path_rate=0.,
                 out_indices=None,
                 out_type='featmap',
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 pad_to_window=False,
                 norm_cfg=dict(type='BN'),
                 stem_norm_cfg=dict(type='LN'),
                 out_norm_cfg=None,
                 init_cfg=[
                     dict(type='TruncNormal', layer='Linear', std=.02,
                          bias=0.),
                     dict(type='Constant', layer='LayerNorm', val=1.,
                          bias=0.)
                 ],
                 pretrained=None,
                 deploy=False,
                 se_ratio=0.,
                 extra_dw=False,
                 extra_dw_se_ratio=0.,
                 dw_weight_groups=None):
        from ...utils.frameworks import warn_pooled_output_in_dense_scope
        num_stages = len(self._parse_arch(arch)['depths'])
        warn_pooled_output_in_dense_scope(out_type, num_stages)
        if out_indices is None:
            out_indices = tuple(range(num_stages))
        if pretrained is not None:
            # mmseg's EncoderDecoder forwards `model.pretrained` this way.
            warnings.warn('DWNet: `pretrained` is deprecated, use '
                          'init_cfg=dict(type="Pretrained", checkpoint=...)')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        #: The arguments it was built with, but the weights' source: a
        #: deployed model rebuilds its training form from them to fold
        #: training-form weights (see :mod:`dwnet_mm.converters.deploy`).
        self.build_kwargs = dict(
            arch=deepcopy(arch), conv_type=conv_type,
            kernel_size=kernel_size, i_dynamic_groups=i_dynamic_groups,
            in_channels=in_channels, patch_size=patch_size,
            mlp_ratio=mlp_ratio, out_indices=out_indices, out_type=out_type,
            pad_to_window=pad_to_window, norm_cfg=deepcopy(norm_cfg),
            stem_norm_cfg=deepcopy(stem_norm_cfg),
            out_norm_cfg=deepcopy(out_norm_cfg), se_ratio=se_ratio,
            extra_dw=extra_dw, extra_dw_se_ratio=extra_dw_se_ratio,
            dw_weight_groups=deepcopy(dw_weight_groups))
        self.arch = self._parse_arch(arch)
        self.mlp_ratio = mlp_ratio
        channels, depths = self.arch['channels'], self.arch['depths']
        self.num_stages = len(depths)
        if conv_type not in DEPTHWISE_TYPES:
            raise ValueError(f'Unknown conv_type {conv_type!r}; choose one '
                             f'of {DEPTHWISE_TYPES}')
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'Unknown out_type {out_type!r}; choose one of '
                             f'{self.OUT_TYPES}')
        if dw_weight_groups is None or isinstance(dw_weight_groups, int):
            dw_weight_groups = [dw_weight_groups] * self.num_stages
        if len(dw_weight_groups) != self.num_stages:
            raise ValueError(f'dw_weight_groups needs one value per stage '
                             f'({self.num_stages}), got {dw_weight_groups}')
        # Options without a deploy form (see switch_to_deploy).
        ablations = dict(
            se_ratio=se_ratio, extra_dw=extra_dw,
            dw_weight_groups=None if set(dw_weight_groups) == {None} else
            dw_weight_groups)
        self.ablations = {k: v for k, v in ablations.items() if v}
        self.norm_type = norm_cfg['type']
        self.conv_type = conv_type
        self.in_channels = in_channels
        self.out_type = out_type
        self.out_indices = self._parse_out_indices(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = PatchEmbed(in_channels, channels[0], patch_size,
                                      stem_norm_cfg)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            downsample = None
            if i < self.num_stages - 1:
                downsample = PatchMerging(channels[i], channels[i + 1],
                                          stem_norm_cfg)
            self.stages.append(
                DWNetStage(
                    channels[i],
                    depth,
                    rates[sum(depths[:i]):sum(depths[:i + 1])],
                    downsample=downsample,
                    conv_type=conv_type,
                    kernel_size=kernel_size,
                    i_dynamic_groups=i_dynamic_groups,
                    mlp_ratio=mlp_ratio,
                    pad_to_window=pad_to_window,
                    norm_cfg=norm_cfg,
                    with_cp=with_cp,
                    se_ratio=se_ratio,
                    dw_weight_groups=dw_weight_groups[i],
                    extra_dw=extra_dw,
                    extra_dw_se_ratio=extra_dw_se_ratio))

        if out_norm_cfg is None:
            out_norm_cfg = dict(type='LN') if out_type == 'avg_featmap' \
                else norm_cfg
        for i in self.out_indices:
            self.add_module(f'norm{i}',
                            build_norm_layer(out_norm_cfg, channels[i])[1])
        self.out_channels = [channels[i] for i in self.out_indices]
        self.deploy = False
        self._freeze_stages()
        if deploy:
            self.switch_to_deploy()

    def _parse_arch(self, arch):
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise ValueError(
                    f'Unknown DWNet arch {arch!r}; choose one of '
                    f'{sorted(set(self.arch_settings))} or pass a dict with '
                    f'"channels" and "depths"')
            return deepcopy(self.arch_settings[arch])
        if not isinstance(arch, dict) or set(arch) != {'channels', 'depths'}:
            raise ValueError('A custom DWNet arch must be a dict with exactly '
                             f'the keys "channels" and "depths", got {arch!r}')
        if len(arch['channels']) != len(arch['depths']):
            raise ValueError('arch "channels" and "depths" must have the same '
                             f'length, got {arch!r}')
        return {k: list(v) for k, v in arch.items()}

    def _parse_out_indices(self, out_indices):
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(f'out_indices {out_indices} out of range for '
                                 f'{self.num_stages} stages')
            parsed.append(index % self.num_stages)
        return tuple(sorted(set(parsed)))

    def init_weights(self):
        if isinstance(self.init_cfg, dict) and \
                self.init_cfg.get('type') == 'Pretrained':
            cfg = self.init_cfg
            load_dwnet_checkpoint(
                self,
                cfg['checkpoint'],
                prefix=cfg.get('prefix'),
                map_location=cfg.get('map_location', 'cpu'),
                resize_kernels=cfg.get('resize_kernels', False),
                trust=cfg.get('trust_checkpoint'))
            self._is_init = True
            return
        super().init_weights()

    def check_input(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(
                f'DWNet expects a 4-D (N, C, H, W) tensor, got {shape}; add '
                'the batch dimension with x.unsqueeze(0) for a single image')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'DWNet was built for {self.in_channels} input channels but '
                f'got {x.shape[1]} (input shape {tuple(x.shape)}); set '
                '`in_channels` in the backbone config or fix the input')

    def forward(self, x):
        self.check_input(x)
        # (N, H, W, C) from the stem on: the layout of every block.
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x)
            if i not in self.out_indices:
                continue
            out = channel_norm_nhwc(getattr(self, f'norm{i}'), out)
            if self.out_type == 'avg_featmap':
                outs.append(out.mean(dim=(1, 2)))
            else:
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    @torch.no_grad()
    def switch_to_deploy(self):
        """Convert to the deploy (inference) form, in place.

        Every child with a deploy form becomes it (``fuse()``): each block
        a :class:`~dwnet_mm.models.layers.DeployDWNetBlock` with every
        BatchNorm folded into the layer beside it, on NHWC tensors; output
        BatchNorms become a per-channel scale and shift. The outputs equal
        the training form's in eval mode (up to rounding). Calling it again
        does nothing. After it, :meth:`load_state_dict` takes deployed state
        dicts, and training-form ones, which
        :func:`~dwnet_mm.converters.state_dict_for` folds.

        Returns:
            DWNet: self.
        """
        if self.deploy:
            return self
        check_deploy_form(self.norm_type, self.ablations)
        fuse_children(self)
        for i in self.out_indices:
            norm = getattr(self, f'norm{i}')
            if isinstance(norm, _BatchNorm):
                setattr(self, f'norm{i}', ChannelScaleShift.from_bn(norm))
        self.deploy = True
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Training-form weights given to a deployed model are folded first;
        # the loader reads this very dict (a child reads a copy of it).
        converted = state_dict_for(self, state_dict, prefix)
        state_dict.clear()
        state_dict.update(converted)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed]
        for i in range(min(self.frozen_stages, self.num_stages)):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def get_layer_depth(self, param_name, prefix=''):
        """Layer depth of a parameter, for layer-wise learning-rate decay.

        The stem is layer 0, each block one layer (a stage's downsampling
        belongs to the first block of the next stage), and the output norms
        and everything outside the backbone the last layer.

        Args:
            param_name (str): Parameter name.
            prefix (str): Prefix of the backbone's parameters.
                Defaults to ''.

        Returns:
            tuple[int, int]: The layer depth and the number of layers.
        """
        depths = self.arch['depths']
        num_layers = sum(depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('stages'):
            parts = name.split('.')
            stage = int(parts[1])
            if parts[2] == 'blocks':
                return sum(depths[:stage]) + int(parts[3]) + 1, num_layers
            return sum(depths[:stage + 1]) + 1, num_layers
        return num_layers - 1, num_layers

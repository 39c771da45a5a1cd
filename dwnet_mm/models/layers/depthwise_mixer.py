"""The DW-block: DWNet's replacement for (shifted) window attention."""
import math

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer

from dwnet_mm.ops import (depthwise_conv, depthwise_conv_taps, linear,
                          onnx_exporting)
from .batchnorm_folding import fold_bn_after, param_like
from .dynamic_conv import (DynamicDepthwiseConv2d,
                           FoldedDynamicDepthwiseConv2d,
                           FoldedInhomogeneousDynamicConv2d,
                           InhomogeneousDynamicConv2d)
from .squeeze_excitation import SqueezeExcitation

DEPTHWISE_TYPES = ('static', 'dynamic', 'i_dynamic')


def build_depthwise_conv(conv_type, channels, kernel_size=7,
                         i_dynamic_groups=32, norm_cfg=dict(type='BN'),
                         weight_groups=None):
    """Build the k x k spatial convolution of a DW-block.

    Args:
        conv_type (str): 'static' (plain depth-wise conv with bias),
            'dynamic' (kernel per image) or 'i_dynamic' (kernel per position
            and channel group).
        channels (int): Number of channels.
        kernel_size (int): Kernel size. Defaults to 7.
        i_dynamic_groups (int): Channel groups of 'i_dynamic'.
            Defaults to 32.
        norm_cfg (dict): Norm of the dynamic kernel generators.
            Defaults to ``dict(type='BN')``.
        weight_groups (int, optional): 'static' only: share each k x k
            kernel among ``channels // weight_groups`` consecutive channels
            (:class:`SharedDepthwiseConv2d`). Defaults to None: a kernel per
            channel.
    """
    if weight_groups is not None and conv_type != 'static':
        raise ValueError('Depth-wise weights shared across channels '
                         f'(dw_weight_groups) need conv_type="static", got '
                         f'{conv_type!r}')
    if weight_groups is not None:
        return SharedDepthwiseConv2d(channels, kernel_size, weight_groups)
    if conv_type == 'static':
        return DepthwiseConv2d(channels, kernel_size)
    if conv_type == 'dynamic':
        return DynamicDepthwiseConv2d(
            channels, kernel_size, norm_cfg=norm_cfg)
    if conv_type == 'i_dynamic':
        return InhomogeneousDynamicConv2d(
            channels, kernel_size, i_dynamic_groups, norm_cfg=norm_cfg)
    raise ValueError(f'Unknown depth-wise conv type {conv_type!r}; '
                     f'choose one of {DEPTHWISE_TYPES}')


class DepthwiseConv2d(nn.Conv2d):
    """Static k x k depth-wise conv with bias and "same" padding.

    An ``nn.Conv2d`` (same parameters and state dict) whose forward runs
    :func:`dwnet_mm.ops.depthwise_conv` (native NHWC kernels on CPUs).

    Args:
        channels (int): Number of channels.
        kernel_size (int): k.
    """

    def __init__(self, channels, kernel_size):
        super().__init__(channels, channels, kernel_size,
                         padding=kernel_size // 2, groups=channels)

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H, W), channels-last memory."""
        return depthwise_conv(x.permute(0, 2, 3, 1), self.weight,
                              self.bias).permute(0, 3, 1, 2)


class FoldedDepthwiseConv2d(nn.Conv2d):
    """The deploy form of :class:`DepthwiseConv2d` -> BN -> ReLU: one conv,
    on (N, H, W, C) tensors."""

    @classmethod
    def from_modules(cls, conv, norm):
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                     padding=conv.padding, groups=conv.groups,
                     device=conv.weight.device, dtype=conv.weight.dtype)
        weight, bias = fold_bn_after(conv.weight, conv.bias, norm)
        module.weight = param_like(weight, conv.weight)
        module.bias = param_like(bias, conv.weight)
        return module

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C)."""
        return depthwise_conv(x, self.weight, self.bias, relu=True)


class SharedDepthwiseConv2d(nn.Module):
    """Static depth-wise conv whose k x k kernels are shared across channels
    in groups, as attention heads share their weights (paper Table 10):
    channels ``g * C / G .. (g + 1) * C / G - 1`` use kernel ``g``. The bias
    stays per channel (it is not a connection weight).

    Args:
        channels (int): Number of channels C.
        kernel_size (int): k.
        weight_groups (int): Number of kernels G; must divide C.
    """

    def __init__(self, channels, kernel_size, weight_groups):
        super().__init__()
        if channels % weight_groups:
            raise ValueError(f'dw_weight_groups={weight_groups} must divide '
                             f'the stage width {channels}')
        self.weight_groups = weight_groups
        self.weight = nn.Parameter(
            torch.empty(weight_groups, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))
        # nn.Conv2d's default init, for the same fan-in of k * k.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1 / kernel_size, 1 / kernel_size)

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H, W), channels-last memory."""
        if onnx_exporting():
            return self._forward_taps(x)
        weight = self.weight.repeat_interleave(
            x.shape[1] // self.weight_groups, dim=0)
        return depthwise_conv(x.permute(0, 2, 3, 1), weight,
                              self.bias).permute(0, 3, 1, 2)

    def _forward_taps(self, x):
        # ONNX's Conv needs a kernel of known shape, which the expanded
        # kernels lose in the trace: k * k shifted products of the channel
        # groups instead.
        B, C, H, W = x.shape
        G, k = self.weight_groups, self.weight.shape[-1]
        out = depthwise_conv_taps(x.reshape(B, G, C // G, H, W),
                                  self.weight.reshape(1, G, k * k, 1, 1), k,
                                  k // 2, (k - 1) // 2)
        return out.reshape(B, C, H, W) + self.bias.view(1, C, 1, 1)


class DepthwiseConvModule(nn.Module):
    """The k x k depth-wise conv of a DW-block -> norm -> ReLU, one module
    with one deploy form (:meth:`fuse`), as mmcv's ``ConvModule``.

    Args:
        channels (int): Number of channels.
        conv_type (str): See :func:`build_depthwise_conv`.
            Defaults to 'static'.
        kernel_size (int): k. Defaults to 7.
        i_dynamic_groups (int): Channel groups of 'i_dynamic'.
            Defaults to 32.
        norm_cfg (dict): Config of the norm after the conv and of the
            dynamic kernel generators'. Defaults to ``dict(type='BN')``.
        weight_groups (int, optional): See :func:`build_depthwise_conv`.
            Defaults to None.
    """

    def __init__(self, channels, conv_type='static', kernel_size=7,
                 i_dynamic_groups=32, norm_cfg=dict(type='BN'),
                 weight_groups=None):
        super().__init__()
        self.conv = build_depthwise_conv(conv_type, channels, kernel_size,
                                         i_dynamic_groups, norm_cfg,
                                         weight_groups)
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H, W), channels-last memory."""
        return self.act(self.norm(self.conv(x)))

    @property
    def has_deploy_form(self):
        """Whether :meth:`fuse` can fold this module (shared kernels
        cannot)."""
        return type(self.conv) in DEPLOY_FORMS

    def fuse(self):
        """The deploy form (eval semantics): conv, BatchNorm and ReLU as one
        folded conv on (N, H, W, C) tensors.

        Raises:
            ValueError: For shared depth-wise kernels (an ablation).
        """
        if not self.has_deploy_form:
            raise ValueError(f'{type(self.conv).__name__} has no deploy form')
        return DEPLOY_FORMS[type(self.conv)].from_modules(self.conv,
                                                          self.norm)


#: The deploy form of each depth-wise conv followed by BatchNorm and ReLU.
DEPLOY_FORMS = {
    DepthwiseConv2d: FoldedDepthwiseConv2d,
    DynamicDepthwiseConv2d: FoldedDynamicDepthwiseConv2d,
    InhomogeneousDynamicConv2d: FoldedInhomogeneousDynamicConv2d,
}


class DepthwiseMixer(nn.Module):
    """1x1 conv-norm-ReLU -> k x k depth-wise conv-norm-ReLU -> 1x1 conv-norm.

    Input and output are NCHW.

    Args:
        channels (int): Number of channels.
        conv_type (str): Kind of depth-wise conv, see
            :func:`build_depthwise_conv`. Defaults to 'static'.
        kernel_size (int): Depth-wise kernel size. Defaults to 7.
        i_dynamic_groups (int): Channel groups of 'i_dynamic'.
            Defaults to 32.
        norm_cfg (dict): Config of the norm layers.
            Defaults to ``dict(type='BN')``.
        se_ratio (float): Squeeze-and-excitation after the depth-wise
            conv-norm-ReLU, with this hidden width ratio (paper Table 6);
            0 for none. Defaults to 0.
        dw_weight_groups (int, optional): Kernels shared across channels in
            this many groups (see :class:`SharedDepthwiseConv2d`).
            Defaults to None.
    """

    def __init__(self, channels, conv_type='static', kernel_size=7,
                 i_dynamic_groups=32, norm_cfg=dict(type='BN'), se_ratio=0.,
                 dw_weight_groups=None):
        super().__init__()
        self.pointwise_in = ConvModule(
            channels, channels, 1, bias=False, norm_cfg=norm_cfg)
        self.depthwise = DepthwiseConvModule(channels, conv_type,
                                             kernel_size, i_dynamic_groups,
                                             norm_cfg, dw_weight_groups)
        self.se = SqueezeExcitation(channels, se_ratio) if se_ratio else None
        self.pointwise_out = ConvModule(
            channels, channels, 1, bias=False, norm_cfg=norm_cfg,
            act_cfg=None)
        # As in the authors' release: nn.Conv2d's default init, not the
        # kaiming fan-out init that ConvModule applies.
        for module in (self.pointwise_in, self.pointwise_out):
            module.conv.reset_parameters()

    def forward(self, x):
        x = pointwise_conv_module(self.pointwise_in, x)
        x = self.depthwise(x)
        if self.se is not None:
            x = self.se(x)
        return pointwise_conv_module(self.pointwise_out, x)


def pointwise_conv_module(module, x):
    """Run a 1x1 :class:`ConvModule` (conv -> norm -> act) as a matmul.

    On the channels-last NCHW tensors of the DWNet blocks, the permutes are
    free and the matmul reads and writes contiguous memory, with no layout
    conversion of the convolution kernels.

    Args:
        module (ConvModule): A 1x1, stride 1, ungrouped conv module with the
            default order ('conv', 'norm', 'act').
        x (Tensor): (N, C, H, W) input.

    Returns:
        Tensor: (N, C', H, W), channels-last memory when ``x`` is.
    """
    conv = module.conv
    x = linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1),
               conv.bias).permute(0, 3, 1, 2)
    if module.with_norm:
        x = module.norm(x)
    if module.with_activation:
        x = module.activate(x)
    return x

"""The DW-block: DWNet's replacement for (shifted) window attention."""
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer

from dwnet_mm.ops import depthwise_conv_nhwc, native_nhwc_view, rows_linear
from .dynamic_conv import DynamicDepthwiseConv2d, InhomogeneousDynamicConv2d

DEPTHWISE_TYPES = ('static', 'dynamic', 'i_dynamic')


def build_depthwise_conv(conv_type, channels, kernel_size=7, groups=32,
                         norm_cfg=dict(type='BN')):
    """Build the k x k spatial convolution of a DW-block.

    Args:
        conv_type (str): 'static' (plain depth-wise conv with bias),
            'dynamic' (kernel per image) or 'i_dynamic' (kernel per position
            and channel group).
        channels (int): Number of channels.
        kernel_size (int): Kernel size. Defaults to 7.
        groups (int): Channel groups of 'i_dynamic'. Defaults to 32.
        norm_cfg (dict): Norm of the dynamic kernel generators.
            Defaults to ``dict(type='BN')``.
    """
    if conv_type == 'static':
        return DepthwiseConv2d(channels, kernel_size)
    if conv_type == 'dynamic':
        return DynamicDepthwiseConv2d(
            channels, kernel_size, norm_cfg=norm_cfg)
    if conv_type == 'i_dynamic':
        return InhomogeneousDynamicConv2d(
            channels, kernel_size, groups=groups, norm_cfg=norm_cfg)
    raise ValueError(f'Unknown depth-wise conv type {conv_type!r}; '
                     f'choose one of {DEPTHWISE_TYPES}')


class DepthwiseConv2d(nn.Conv2d):
    """Static k x k depth-wise conv with bias and "same" padding.

    An ``nn.Conv2d`` (same parameters and state dict) that runs channels-last
    inputs in the native NHWC kernels on CPUs (see :mod:`dwnet_mm.ops`).

    Args:
        channels (int): Number of channels.
        kernel_size (int): k.
    """

    def __init__(self, channels, kernel_size):
        super().__init__(channels, channels, kernel_size,
                         padding=kernel_size // 2, groups=channels)

    def forward(self, x):
        nhwc = native_nhwc_view(x, self.kernel_size[0])
        if nhwc is not None:
            return depthwise_conv_nhwc(nhwc, self.weight,
                                       self.bias).permute(0, 3, 1, 2)
        return super().forward(x)


class DepthwiseMixer(nn.Module):
    """1x1 conv-norm-ReLU -> k x k depth-wise conv-norm-ReLU -> 1x1 conv-norm.

    Input and output are NCHW.

    Args:
        channels (int): Number of channels.
        conv_type (str): Kind of depth-wise conv, see
            :func:`build_depthwise_conv`. Defaults to 'static'.
        kernel_size (int): Depth-wise kernel size. Defaults to 7.
        groups (int): Channel groups of 'i_dynamic'. Defaults to 32.
        norm_cfg (dict): Config of the norm layers.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, conv_type='static', kernel_size=7, groups=32,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.pointwise_in = ConvModule(
            channels, channels, 1, bias=False, norm_cfg=norm_cfg)
        self.depthwise = build_depthwise_conv(conv_type, channels,
                                              kernel_size, groups, norm_cfg)
        self.depthwise_norm = build_norm_layer(norm_cfg, channels)[1]
        self.act = nn.ReLU(inplace=True)
        self.pointwise_out = ConvModule(
            channels, channels, 1, bias=False, norm_cfg=norm_cfg,
            act_cfg=None)
        # As in the authors' release: nn.Conv2d's default init, not the
        # kaiming fan-out init that ConvModule applies.
        for module in (self.pointwise_in, self.pointwise_out):
            module.conv.reset_parameters()

    def forward(self, x):
        x = pointwise_conv_module(self.pointwise_in, x)
        H, W = x.shape[-2:]
        # Even kernels pad k//2 on both sides, one row/column too many: keep
        # the offsets -k//2 .. k//2-1, as the i_dynamic conv does.
        x = self.depthwise(x)[..., :H, :W]
        x = self.act(self.depthwise_norm(x))
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
    x = rows_linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1),
                    conv.bias).permute(0, 3, 1, 2)
    if module.with_norm:
        x = module.norm(x)
    if module.with_activation:
        x = module.activate(x)
    return x

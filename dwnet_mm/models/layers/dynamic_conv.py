"""Depth-wise convolutions whose kernels are predicted from the input, in
their training and deploy forms."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from dwnet_mm.ops import (dynamic_depthwise_conv, i_dynamic_conv_from_hidden,
                          interleaved_channels, linear)
from .batchnorm_folding import (bn_scale_shift, fold_bn_after, linear_from,
                                param_like)


class DynamicDepthwiseConv2d(nn.Module):
    """Homogeneous dynamic depth-wise convolution (the paper's D-DW).

    One k x k kernel per channel and per image, predicted from the globally
    pooled input in the manner of SE: pool -> 1x1 conv (C -> C/r, no bias) ->
    norm -> ReLU -> 1x1 conv (C/r -> C*k*k). A learned static bias is added to
    the output. The convolution is :func:`dwnet_mm.ops.dynamic_depthwise_conv`.

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int): Size of the depth-wise kernel. Defaults to 7.
        reduction (int): Channel reduction of the kernel generator.
            Defaults to 4.
        norm_cfg (dict): Config of the generator's norm layer.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, kernel_size=7, reduction=4,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        hidden = channels // reduction
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = build_norm_layer(norm_cfg, hidden)[1]
        self.conv2 = nn.Conv2d(hidden, channels * kernel_size**2, 1)
        self.bias = nn.Parameter(torch.zeros(channels))

    def predict_kernel(self, x):
        """Per-image kernels of shape (B * C, 1, k, k) for NCHW ``x``."""
        # The 1x1 convs of a 1x1 map as matmuls of one row per image.
        context = linear(F.adaptive_avg_pool2d(x, 1).flatten(1),
                         self.conv1.weight.flatten(1), self.conv1.bias)
        context = F.relu(self.bn(context[..., None, None])).flatten(1)
        kernel = linear(context, self.conv2.weight.flatten(1),
                        self.conv2.bias)
        return kernel.reshape(-1, 1, self.kernel_size, self.kernel_size)

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H, W), channels-last memory."""
        return dynamic_depthwise_conv(x.permute(0, 2, 3, 1),
                                      self.predict_kernel(x),
                                      self.bias).permute(0, 3, 1, 2)


class FoldedDynamicDepthwiseConv2d(nn.Module):
    """The deploy form of :class:`DynamicDepthwiseConv2d` -> BN -> ReLU, on
    (N, H, W, C) tensors.

    The generator's 1x1 convs become the linear layers ``fc1`` and ``fc2``:
    its BN goes into ``fc1`` (which gains a bias), the output BN's scale into
    the rows of ``fc2`` and with its shift into ``bias``.

    Args:
        channels (int): Number of channels C.
        kernel_size (int): k.
        hidden (int): Hidden width of the kernel generator.
    """

    def __init__(self, channels, kernel_size, hidden):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels * kernel_size**2)
        self.bias = nn.Parameter(torch.zeros(channels))

    @classmethod
    def from_modules(cls, dynamic, norm):
        k, C = dynamic.kernel_size, dynamic.channels
        like = dynamic.conv2.weight
        module = cls(C, k, dynamic.conv1.out_channels).to(like)
        w1, b1 = fold_bn_after(dynamic.conv1.weight.flatten(1),
                               dynamic.conv1.bias, dynamic.bn)
        module.fc1 = linear_from(w1, b1, like)
        scale, shift = bn_scale_shift(norm)
        rows = scale.repeat_interleave(k * k)
        w2 = dynamic.conv2.weight.double().flatten(1) * rows.view(-1, 1)
        b2 = dynamic.conv2.bias.double() * rows
        module.fc2 = linear_from(w2, b2, like)
        module.bias = param_like(dynamic.bias.double() * scale + shift, like)
        return module

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C)."""
        k = self.kernel_size
        context = linear(x.mean((1, 2)), self.fc1.weight, self.fc1.bias,
                         relu=True)
        kernels = linear(context, self.fc2.weight, self.fc2.bias)
        return dynamic_depthwise_conv(x, kernels.view(-1, self.channels, k, k),
                                      self.bias, relu=True)


class InhomogeneousDynamicConv2d(nn.Module):
    """Inhomogeneous dynamic depth-wise convolution (the paper's I-Dynamic).

    A k x k kernel is predicted at every position from the local features
    (1x1 conv C -> C/r -> norm -> ReLU -> 1x1 conv -> k*k*G) and shared by
    the channels of each of the G groups. The generation and application of
    the kernels is :func:`dwnet_mm.ops.i_dynamic_conv_from_hidden` (any
    device and dtype, differentiable; without gradients it never holds all
    kernels at once).

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int): Size of the kernel. Defaults to 7.
        i_dynamic_groups (int): Number of channel groups sharing a kernel.
            Defaults to 32.
        reduction (int): Channel reduction of the kernel generator.
            Defaults to 4.
        norm_cfg (dict): Config of the generator's norm layer.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, kernel_size=7, i_dynamic_groups=32,
                 reduction=4, norm_cfg=dict(type='BN')):
        super().__init__()
        if channels % i_dynamic_groups:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'i_dynamic_groups ({i_dynamic_groups})')
        self.kernel_size = kernel_size
        self.i_dynamic_groups = i_dynamic_groups
        hidden = channels // reduction
        # The authors' module layout (conv1.{0,1}, conv2.0), for their
        # checkpoints.
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            build_norm_layer(norm_cfg, hidden)[1],
            nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(
            nn.Conv2d(hidden, kernel_size**2 * i_dynamic_groups, 1))

    def hidden_features(self, x):
        """Generator features after norm and ReLU, (B, H, W, C/r), of
        (B, H, W, C) ``x``."""
        conv, norm, act = self.conv1
        hidden = linear(x, conv.weight.flatten(1), conv.bias)
        return act(norm(hidden.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H, W), channels-last memory."""
        x = x.permute(0, 2, 3, 1)
        weight, bias = tap_major(self.conv2[0], self.i_dynamic_groups)
        return i_dynamic_conv_from_hidden(x, self.hidden_features(x), weight,
                                          bias, self.kernel_size,
                                          self.i_dynamic_groups).permute(
                                              0, 3, 1, 2)


def tap_major(conv, groups):
    """The weight (k*k*G, C_h) and bias of the generator's last 1x1 conv,
    whose rows are laid out (G, k*k), with the rows reordered to (k*k, G),
    the layout of :func:`dwnet_mm.ops.i_dynamic_conv_from_hidden`."""
    weight = conv.weight.flatten(1)
    weight = weight.view(groups, -1, weight.shape[1]).transpose(0, 1)
    bias = conv.bias
    if bias is not None:
        bias = bias.view(groups, -1).t().reshape(-1)
    return weight.reshape(-1, weight.shape[-1]), bias


class FoldedInhomogeneousDynamicConv2d(nn.Module):
    """The deploy form of :class:`InhomogeneousDynamicConv2d` -> BN -> ReLU,
    on (N, H, W, C) tensors.

    The generator's 1x1 convs become the linear layers ``fc1`` and ``fc2``;
    its BN goes into ``fc1``. The kernels are shared by the channels of a
    group, so the output BN cannot go into them; its scale is applied to the
    input of the kernel application (``input_scale``, in the same copy that
    pads it) and its shift starts the accumulation (``bias``), so it costs
    no extra pass.

    It runs in the interleaved channel order (channel ``s * G + g`` is the
    ``s``-th of group ``g``), which the native kernels need: ``fc1``'s
    columns, ``input_scale`` and ``bias`` are reordered at folding, and
    :class:`DeployDWNetBlock` reorders the 1x1 convs around it
    (:attr:`channel_order`). ``fc2``'s rows are laid out (k*k, G).

    Args:
        channels (int): Number of channels C.
        kernel_size (int): k.
        i_dynamic_groups (int): Number of channel groups sharing a kernel.
        hidden (int): Hidden width of the kernel generator.
    """

    def __init__(self, channels, kernel_size, i_dynamic_groups, hidden):
        super().__init__()
        self.kernel_size = kernel_size
        self.i_dynamic_groups = i_dynamic_groups
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, kernel_size**2 * i_dynamic_groups)
        self.input_scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    @classmethod
    def from_modules(cls, dynamic, norm):
        conv1, bn1, _ = dynamic.conv1
        conv2 = dynamic.conv2[0]
        like = conv2.weight
        module = cls(conv1.in_channels, dynamic.kernel_size,
                     dynamic.i_dynamic_groups, conv1.out_channels).to(like)
        order = module.channel_order
        w1, b1 = fold_bn_after(conv1.weight.flatten(1), conv1.bias, bn1)
        module.fc1 = linear_from(w1[:, order], b1, like)
        module.fc2 = linear_from(*tap_major(conv2, dynamic.i_dynamic_groups),
                                 like)
        scale, shift = bn_scale_shift(norm)
        module.input_scale = param_like(scale[order], like)
        module.bias = param_like(shift[order], like)
        return module

    @property
    def channel_order(self):
        """The interleaved order of the channels, as indices into the
        grouped one (:func:`dwnet_mm.ops.interleaved_channels`)."""
        return interleaved_channels(self.input_scale.numel(),
                                    self.i_dynamic_groups)

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C), channels interleaved."""
        return i_dynamic_conv_from_hidden(
            x, linear(x, self.fc1.weight, self.fc1.bias, relu=True),
            self.fc2.weight, self.fc2.bias, self.kernel_size,
            self.i_dynamic_groups, self.input_scale, self.bias, relu=True,
            interleaved=True)

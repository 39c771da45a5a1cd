"""The deploy (inference) form of DWNet blocks.

:meth:`DWNet.switch_to_deploy` folds every BatchNorm into the conv or linear
layer beside it and runs the blocks on channels-last (N, H, W, C) tensors,
with a matmul for every 1x1 conv, so that no block converts layouts:

* ``pointwise_in`` (1x1 conv -> BN -> ReLU): one linear + ReLU;
* the k x k conv -> ``depthwise_norm`` -> ReLU: the BN goes into the
  depth-wise kernel and bias (static), into the kernel generator's last
  layer and the static bias (dynamic), or into a per-channel input scale
  and output bias of the chunked kernel application (i_dynamic); the
  generators' own BN goes into their first layer. The native i_dynamic
  kernel runs in the interleaved channel order, which the 1x1 convs around
  it produce and take back: their weights are reordered, the activations
  never are;
* ``pointwise_out`` (1x1 conv -> BN) + residual: one linear + add;
* BN -> MLP: the BN goes into ``fc1``; ``fc2`` + residual: one linear + add.

All folds assume eval-mode BatchNorm (running statistics). Without
autograd, activations and residual adds run in place and the MLP runs in
row chunks whose hidden activations stay in cache; with autograd the same
layers run out of place (the deploy form stays differentiable).
"""
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from dwnet_mm.ops import (MLP_CHUNK_ELEMENTS, bias_activation_,
                          depthwise_conv_nhwc, fused_mlp, fused_mlp_supported,
                          i_dynamic_conv_nhwc,
                          interleaved_channels, linear_into, mlp_chunk_rows,
                          native_depthwise_supported,
                          native_i_dynamic_supported, onnx_exporting,
                          small_batch_linear)
from .dynamic_conv import (DynamicDepthwiseConv2d, InhomogeneousDynamicConv2d,
                           batched_depthwise_conv,
                           generate_and_apply_i_dynamic,
                           inhomogeneous_dynamic_conv)


def _inference(*tensors):
    """True when no autograd graph is recorded for these tensors, so that
    in-place activations and accumulation are safe.

    False while exporting to ONNX: the exporter's trace loses in-place and
    ``out=`` writes into views and preallocated buffers, so every layer
    takes its out-of-place form there.
    """
    if onnx_exporting():
        return False
    return not torch.is_grad_enabled() or not any(
        t is not None and t.requires_grad for t in tensors)


def _fast_path(*tensors):
    """In-place, ``out=`` kernels: without autograd, and with one dtype (no
    autocast mixing, which the ``out=`` forms do not do)."""
    tensors = [t for t in tensors if t is not None]
    return _inference(*tensors) and not torch.is_autocast_enabled(
        tensors[0].device.type) and len({t.dtype for t in tensors}) == 1


class LinearWeights(NamedTuple):
    """The weight and bias of a linear layer, e.g. one with its channels
    reordered; callable like ``nn.Linear``."""
    weight: torch.Tensor
    bias: Optional[torch.Tensor]

    def __call__(self, x):
        return F.linear(x, self.weight, self.bias)


def linear_relu(x, linear):
    """``relu(linear(x))``."""
    if _fast_path(x, linear.weight, linear.bias):
        out = x.new_empty(*x.shape[:-1], linear.weight.shape[0])
        linear_into(out.view(-1, out.shape[-1]),
                    x.contiguous().view(-1, x.shape[-1]), linear.weight,
                    linear.bias, relu=True)
        return out
    return F.relu(F.linear(x, linear.weight, linear.bias))


def _accumulate_linear(out, x, linear):
    """``out += linear(x)`` for 2-D ``out`` and ``x``, in place."""
    return linear_into(out, x, linear.weight, linear.bias, accumulate=True)


def residual_linear(residual, x, linear, inplace=False):
    """``residual + linear(x)``; into ``residual`` if ``inplace``."""
    if not _fast_path(residual, x, linear.weight, linear.bias):
        return residual + linear(x)
    rows = residual.reshape(-1, residual.shape[-1])
    if not inplace:
        rows = rows.clone()
    _accumulate_linear(rows, x.reshape(-1, x.shape[-1]), linear)
    return rows.view(residual.shape)


def residual_mlp(x, fc1, fc2, inplace=False, workspace=None):
    """``x + fc2(gelu(fc1(x)))`` over the last dim of ``x``.

    In inference it runs in one native call (:func:`fused_mlp`) where it
    can, else in row chunks through one hidden buffer (``workspace``, a 1-D
    tensor of at least :data:`MLP_CHUNK_ELEMENTS`, or a new one),
    accumulating into ``x`` itself if ``inplace``.
    """
    if not _fast_path(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias):
        return x + fc2(F.gelu(fc1(x)))
    rows = x.reshape(-1, x.shape[-1])
    if not inplace:
        rows = rows.clone()
    if fused_mlp_supported(rows, fc1.weight, fc2.weight):
        fused_mlp(rows, rows, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
                  accumulate=True)
        return rows.view(x.shape)
    hidden_width = fc1.out_features
    # Chunks keep the hidden rows in a CPU's cache; a GPU gains nothing
    # from them and loses on the smaller GEMMs.
    chunk_rows = mlp_chunk_rows(rows.shape[0], hidden_width) \
        if x.device.type == 'cpu' else rows.shape[0]
    if workspace is None or workspace.numel() < chunk_rows * hidden_width:
        workspace = rows.new_empty(chunk_rows * hidden_width)
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = rows[start:start + chunk_rows]
        hidden = workspace[:chunk.shape[0] * hidden_width].view(
            chunk.shape[0], hidden_width)
        linear_into(hidden, chunk, fc1.weight)
        bias_activation_(hidden, fc1.bias, 'gelu')
        _accumulate_linear(chunk, hidden, fc2)
    return rows.view(x.shape)


def new_workspace(x, hidden_ratio=4.):
    """The hidden buffer for :func:`residual_mlp`, like ``x``: the MLP's
    hidden activations of all rows of ``x`` (``hidden_ratio`` times its
    width), on a CPU at most :data:`MLP_CHUNK_ELEMENTS`."""
    elements = int(x.numel() * hidden_ratio)
    if x.device.type == 'cpu':
        elements = min(MLP_CHUNK_ELEMENTS, elements)
    return x.new_empty(elements)


def bn_scale_shift(norm):
    """Per-channel ``(scale, shift)`` of an eval-mode BatchNorm, in fp64.

    Raises:
        TypeError: If ``norm`` is not a BatchNorm with running statistics.
    """
    if not isinstance(norm, _BatchNorm):
        raise TypeError(
            f'switch_to_deploy folds BatchNorm layers only, found '
            f'{type(norm).__name__}; build the model with norm_cfg=dict('
            "type='BN') (or SyncBN) to deploy it")
    if norm.running_mean is None:
        raise TypeError(
            'switch_to_deploy needs BatchNorm running statistics, but this '
            'one was built with track_running_stats=False')
    var = norm.running_var.double()
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.double()
    return scale, shift


def _param(value, like):
    return nn.Parameter(value.to(like.dtype).to(like.device),
                        requires_grad=like.requires_grad)


def _linear(weight, bias, like):
    """An ``nn.Linear`` holding ``weight`` (out, in) and ``bias``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                       device=like.device, dtype=like.dtype)
    linear.weight = _param(weight, like)
    if bias is not None:
        linear.bias = _param(bias, like)
    return linear


def fold_bn_after(weight, bias, norm):
    """Fold ``norm(W x + b)`` into one layer: rows of ``W`` scaled.

    Args:
        weight (Tensor): (out, ...) weight of the layer before the norm.
        bias (Tensor, optional): Its (out, ) bias.
        norm (nn.Module): The BatchNorm after it.

    Returns:
        tuple[Tensor, Tensor]: Folded weight and bias, in fp64.
    """
    scale, shift = bn_scale_shift(norm)
    weight = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    if bias is not None:
        shift = shift + bias.double() * scale
    return weight, shift


def fold_bn_before(weight, bias, norm):
    """Fold ``W norm(x) + b`` into one linear layer: columns scaled.

    Returns:
        tuple[Tensor, Tensor]: Folded (out, in) weight and bias, in fp64.
    """
    scale, shift = bn_scale_shift(norm)
    weight = weight.double().flatten(1)
    new_bias = weight @ shift
    if bias is not None:
        new_bias = new_bias + bias.double()
    return weight * scale.view(1, -1), new_bias


class ChannelScaleShift(nn.Module):
    """``x * weight + bias`` over the last (channel) dim: an eval-mode
    BatchNorm with its statistics folded in.

    Args:
        channels (int): Number of channels.
    """

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    @classmethod
    def from_bn(cls, norm):
        scale, shift = bn_scale_shift(norm)
        module = cls(scale.numel())
        module.weight = _param(scale, norm.running_var)
        module.bias = _param(shift, norm.running_var)
        return module

    def forward(self, x):
        return torch.addcmul(self.bias, x, self.weight)


class FoldedDepthwiseConv2d(nn.Conv2d):
    """Static depth-wise conv -> BN -> ReLU as one conv, on NHWC tensors."""

    @classmethod
    def from_modules(cls, conv, norm):
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                     padding=conv.padding, groups=conv.groups,
                     device=conv.weight.device, dtype=conv.weight.dtype)
        weight, bias = fold_bn_after(conv.weight, conv.bias, norm)
        module.weight = _param(weight, conv.weight)
        module.bias = _param(bias, conv.weight)
        return module

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C)."""
        if native_depthwise_supported(x, self.kernel_size[0]):
            return depthwise_conv_nhwc(x, self.weight, self.bias, relu=True)
        # The permuted NHWC tensor is a channels-last NCHW one: the conv
        # runs in the NHWC kernels and returns channels-last memory.
        H, W = x.shape[1:3]
        y = self._conv_forward(x.permute(0, 3, 1, 2), self.weight, self.bias)
        # Even kernels: keep offsets -k//2 .. k//2-1, as DepthwiseMixer.
        y = y[..., :H, :W]
        y = y.relu_() if _inference(x, self.weight) else F.relu(y)
        return y.permute(0, 2, 3, 1).contiguous()


class FoldedDynamicDepthwiseConv2d(nn.Module):
    """:class:`DynamicDepthwiseConv2d` -> BN -> ReLU with both BNs folded,
    on NHWC tensors.

    The generator's BN goes into ``conv1`` (which gains a bias), the output
    BN's scale into the rows of ``conv2`` and with its shift into ``bias``.
    """

    def __init__(self, channels, kernel_size, hidden):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv1 = nn.Linear(channels, hidden)
        self.conv2 = nn.Linear(hidden, channels * kernel_size**2)
        self.bias = nn.Parameter(torch.zeros(channels))

    @classmethod
    def from_modules(cls, dynamic, norm):
        assert isinstance(dynamic, DynamicDepthwiseConv2d)
        k, C = dynamic.kernel_size, dynamic.channels
        like = dynamic.conv2.weight
        module = cls(C, k, dynamic.conv1.out_channels).to(like)
        w1, b1 = fold_bn_after(dynamic.conv1.weight.flatten(1),
                               dynamic.conv1.bias, dynamic.bn)
        module.conv1 = _linear(w1, b1, like)
        scale, shift = bn_scale_shift(norm)
        rows = scale.repeat_interleave(k * k)
        w2 = dynamic.conv2.weight.double().flatten(1) * rows.view(-1, 1)
        b2 = dynamic.conv2.bias.double() * rows
        module.conv2 = _linear(w2, b2, like)
        module.bias = _param(dynamic.bias.double() * scale + shift, like)
        return module

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C)."""
        B, H, W, C = x.shape
        k = self.kernel_size
        context = linear_relu(x.mean((1, 2)), self.conv1)
        kernel = small_batch_linear(context, self.conv2.weight,
                                    self.conv2.bias)
        if native_depthwise_supported(x, k):
            return depthwise_conv_nhwc(x, kernel.view(B, C, k, k), self.bias,
                                       relu=True)
        # The permuted NHWC tensor is a channels-last NCHW one, which the
        # batched conv keeps channels-last (no layout conversion).
        out = batched_depthwise_conv(
            x.permute(0, 3, 1, 2), kernel.reshape(B * C, 1, k, k),
            self.bias.repeat(B), k // 2)
        # Even kernels: keep offsets -k//2 .. k//2-1, as DepthwiseMixer.
        out = out[..., :H, :W].permute(0, 2, 3, 1)
        if _inference(x, kernel, self.bias):
            return out.relu_().contiguous()
        return F.relu(out).contiguous()


class FoldedInhomogeneousDynamicConv2d(nn.Module):
    """:class:`InhomogeneousDynamicConv2d` -> BN -> ReLU with both BNs
    folded, on NHWC tensors.

    The generator's BN goes into ``conv1``. The kernels are shared by the
    channels of a group, so the output BN cannot go into them; its scale is
    applied to the input of the kernel application (``input_scale``, in the
    same copy that pads it) and its shift starts the accumulation
    (``bias``), so it costs no extra pass.
    """

    def __init__(self, channels, kernel_size, groups, hidden):
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.conv1 = nn.Linear(channels, hidden)
        self.conv2 = nn.Linear(hidden, kernel_size**2 * groups)
        self.input_scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    @classmethod
    def from_modules(cls, dynamic, norm):
        assert isinstance(dynamic, InhomogeneousDynamicConv2d)
        conv1, bn1, _ = dynamic.conv1
        conv2 = dynamic.conv2[0]
        like = conv2.weight
        module = cls(conv1.in_channels, dynamic.kernel_size, dynamic.groups,
                     conv1.out_channels).to(like)
        w1, b1 = fold_bn_after(conv1.weight.flatten(1), conv1.bias, bn1)
        module.conv1 = _linear(w1, b1, like)
        module.conv2 = _linear(conv2.weight.flatten(1), conv2.bias, like)
        scale, shift = bn_scale_shift(norm)
        module.input_scale = _param(scale, like)
        module.bias = _param(shift, like)
        return module

    def interleaved_order(self, x):
        """The channel order of the fast native kernel
        (:func:`dwnet_mm.ops.interleaved_channels`) where it runs for the NHWC
        input ``x``, else None."""
        if not _fast_path(x, self.conv1.weight, self.conv2.weight) or \
                not native_i_dynamic_supported(
                    x, self.kernel_size, self.groups, interleaved=True):
            return None
        channels = x.shape[-1]
        # The weights of conv1 and of the 1x1 convs around this layer are
        # reordered in every forward: where they outnumber the activations
        # (the last stage at small batches), copying them costs more time
        # and memory than the faster kernel saves.
        if x.numel() < self.conv1.weight.numel() + 2 * channels**2:
            return None
        return interleaved_channels(channels, self.groups, x.device)

    def forward(self, x, order=None):
        """(N, H, W, C) -> (N, H, W, C).

        Args:
            x (Tensor): Input.
            order (Tensor, optional): :meth:`interleaved_order`, where ``x``
                and the output are in that channel order. Defaults to None.
        """
        if order is not None:
            conv1 = LinearWeights(self.conv1.weight[:, order], self.conv1.bias)
            return i_dynamic_conv_nhwc(
                x, linear_relu(x, conv1), self.conv2.weight, self.conv2.bias,
                self.kernel_size, self.groups, self.input_scale[order],
                self.bias[order], relu=True, interleaved=True)
        B, H, W, C = x.shape
        hidden = linear_relu(x, self.conv1)
        x_nchw = x.permute(0, 3, 1, 2)
        params = (self.conv2.weight, self.conv2.bias, self.input_scale,
                  self.bias)
        if not _inference(x, hidden, *params):
            kernels = torch.matmul(self.conv2.weight, hidden.reshape(
                B, H * W, -1).transpose(1, 2)) + self.conv2.bias.view(
                    1, -1, 1)
            out = inhomogeneous_dynamic_conv(
                x_nchw * self.input_scale.view(1, -1, 1, 1),
                kernels.view(B, -1, H, W), self.kernel_size)
            out = out + self.bias.view(1, -1, 1, 1)
            return F.relu(out).permute(0, 2, 3, 1).contiguous()
        if native_i_dynamic_supported(x, self.kernel_size, self.groups):
            return i_dynamic_conv_nhwc(
                x, hidden, self.conv2.weight, self.conv2.bias,
                self.kernel_size, self.groups, self.input_scale, self.bias,
                relu=True)
        out = generate_and_apply_i_dynamic(
            x_nchw, hidden, self.conv2.weight, self.conv2.bias,
            self.kernel_size, self.groups, input_scale=self.input_scale,
            out_bias=self.bias)
        return torch.clamp_min(out.permute(0, 2, 3, 1), 0,
                               out=out.new_empty(B, H, W, C))


def fold_depthwise(depthwise, norm):
    """The deploy module of a DW-block's k x k conv and the BN after it."""
    if isinstance(depthwise, DynamicDepthwiseConv2d):
        return FoldedDynamicDepthwiseConv2d.from_modules(depthwise, norm)
    if isinstance(depthwise, InhomogeneousDynamicConv2d):
        return FoldedInhomogeneousDynamicConv2d.from_modules(depthwise, norm)
    if isinstance(depthwise, nn.Conv2d) and \
            depthwise.groups == depthwise.in_channels:
        return FoldedDepthwiseConv2d.from_modules(depthwise, norm)
    raise TypeError(f'cannot deploy a DW-block with {type(depthwise)}')


class DeployDWNetBlock(nn.Module):
    """A :class:`DWNetBlock` with its BNs folded, on NHWC tensors.

    ``x + pointwise_out(depthwise(pointwise_in(x)))``, then
    ``x + fc2(gelu(fc1(x)))``, where each name is one layer (see the module
    docstring). Stochastic depth is gone: the deploy form is for inference.

    Args:
        channels (int): Number of channels.
        hidden (int): MLP hidden width.
        depthwise (nn.Module): The folded k x k conv (NHWC -> NHWC,
            ReLU included).
        kernel_size (int): k, for ``pad_to_window``.
        pad_to_window (bool): See :class:`DWNetBlock`.
    """

    def __init__(self, channels, hidden, depthwise, kernel_size=7,
                 pad_to_window=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.pad_to_window = pad_to_window
        self.pointwise_in = nn.Linear(channels, channels)
        self.depthwise = depthwise
        self.pointwise_out = nn.Linear(channels, channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    @classmethod
    def from_block(cls, block):
        """Fold a training-form :class:`DWNetBlock` (eval semantics)."""
        mixer, mlp = block.mixer, block.mlp
        like = mlp.fc1.weight
        module = cls(mlp.fc1.in_features, mlp.fc1.out_features,
                     fold_depthwise(mixer.depthwise, mixer.depthwise_norm),
                     block.kernel_size, block.pad_to_window)
        for name in ('pointwise_in', 'pointwise_out'):
            conv_module = getattr(mixer, name)
            conv = conv_module.conv
            if conv.kernel_size != (1, 1) or conv.groups != 1:
                raise TypeError(f'{name} must be an ungrouped 1x1 conv')
            weight, bias = fold_bn_after(conv.weight.flatten(1), conv.bias,
                                         conv_module.norm)
            setattr(module, name, _linear(weight, bias, like))
        weight, bias = fold_bn_before(mlp.fc1.weight, mlp.fc1.bias,
                                      block.norm)
        module.fc1 = _linear(weight, bias, like)
        module.fc2 = _linear(mlp.fc2.weight, mlp.fc2.bias, like)
        return module.to(like.device)

    def forward(self, x):
        """(N, C, H, W) -> (N, C, H, W), like :class:`DWNetBlock`."""
        return self.forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_nhwc(self, x, inplace=False, workspace=None):
        """(N, H, W, C) -> (N, H, W, C).

        Args:
            x (Tensor): Input.
            inplace (bool): Without autograd, update ``x`` itself (the
                residual stream) and return it. Defaults to False.
            workspace (Tensor, optional): Hidden buffer of the MLP, see
                :func:`residual_mlp`. Defaults to a new one.
        """
        x = x.contiguous()
        y = x
        H, W = x.shape[1:3]
        if self.pad_to_window:
            k = self.kernel_size
            y = F.pad(x, (0, 0, 0, -W % k, 0, -H % k))
        y, pointwise_out = self.mix(y)
        if self.pad_to_window:
            y = y[:, :H, :W]
        x = residual_linear(x, y, pointwise_out, inplace)
        return residual_mlp(x, self.fc1, self.fc2, True, workspace)

    def mix(self, x):
        """``depthwise(pointwise_in(x))`` and the ``pointwise_out`` layer for
        it: reordered when the depth-wise op runs in another channel order
        (I-Dynamic, see :meth:`FoldedInhomogeneousDynamicConv2d.forward`)."""
        order = None
        if isinstance(self.depthwise, FoldedInhomogeneousDynamicConv2d):
            order = self.depthwise.interleaved_order(x)
        if order is None:
            return (self.depthwise(linear_relu(x, self.pointwise_in)),
                    self.pointwise_out)
        bias = self.pointwise_in.bias
        pointwise_in = LinearWeights(self.pointwise_in.weight[order],
                                     None if bias is None else bias[order])
        pointwise_out = LinearWeights(self.pointwise_out.weight[:, order],
                                      self.pointwise_out.bias)
        return (self.depthwise(linear_relu(x, pointwise_in), order),
                pointwise_out)

"""BatchNorm folding: the math of every deploy form.

An eval-mode BatchNorm is a per-channel affine map ``x * scale + shift``
(:func:`bn_scale_shift`), which folds into the linear layer before it
(:func:`fold_bn_after`: rows scaled) or after it (:func:`fold_bn_before`:
columns scaled, shift through the weights). Folds run in float64.
"""
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


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


def param_like(value, like):
    """``value`` as a parameter with the dtype, device and requires_grad of
    ``like``."""
    return nn.Parameter(value.to(like.dtype).to(like.device),
                        requires_grad=like.requires_grad)


def linear_from(weight, bias, like):
    """An ``nn.Linear`` holding ``weight`` (out, in) and ``bias``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                       device=like.device, dtype=like.dtype)
    linear.weight = param_like(weight, like)
    if bias is not None:
        linear.bias = param_like(bias, like)
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
        module.weight = param_like(scale, norm.running_var)
        module.bias = param_like(shift, norm.running_var)
        return module

    def forward(self, x):
        return torch.addcmul(self.bias, x, self.weight)

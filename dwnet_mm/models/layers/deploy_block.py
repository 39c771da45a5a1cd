"""The deploy (inference) form of DWNet blocks.

:meth:`DWNet.switch_to_deploy` folds every BatchNorm into the conv or linear
layer beside it and runs the blocks on channels-last (N, H, W, C) tensors,
with a matmul for every 1x1 conv, so that no block converts layouts:

* ``pointwise_in`` (1x1 conv -> BN -> ReLU): one linear + ReLU;
* ``depthwise`` (k x k conv -> BN -> ReLU): the BN goes into the
  depth-wise kernel and bias (static), into the kernel generator's last
  layer and the static bias (dynamic), or into a per-channel input scale
  and output bias of the kernel application (i_dynamic); the generators'
  own BN goes into their first layer. The I-Dynamic conv runs in the
  interleaved channel order (:func:`dwnet_mm.ops.interleaved_channels`):
  the rows of ``pointwise_in`` and the columns of ``pointwise_out`` are
  reordered once, here, and the activations never are;
* ``pointwise_out`` (1x1 conv -> BN) + residual: one linear + add;
* BN -> MLP: the BN goes into ``fc1``; ``fc2`` + residual: one linear + add.

All folds assume eval-mode BatchNorm (running statistics). The deploy form
stays differentiable.
"""
import torch.nn as nn
import torch.nn.functional as F

from dwnet_mm.ops import linear, mlp
from .batchnorm_folding import fold_bn_after, fold_bn_before, linear_from


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
        depthwise = mixer.depthwise.fuse()
        module = cls(mlp.fc1.in_features, mlp.fc1.out_features, depthwise,
                     block.kernel_size, block.pad_to_window)
        # The depth-wise conv's channel order, baked into the 1x1 convs.
        order = getattr(depthwise, 'channel_order', None)
        for name in ('pointwise_in', 'pointwise_out'):
            conv_module = getattr(mixer, name)
            conv = conv_module.conv
            if conv.kernel_size != (1, 1) or conv.groups != 1:
                raise TypeError(f'{name} must be an ungrouped 1x1 conv')
            weight, bias = fold_bn_after(conv.weight.flatten(1), conv.bias,
                                         conv_module.norm)
            if order is not None and name == 'pointwise_in':
                weight, bias = weight[order], bias[order]
            elif order is not None:
                weight = weight[:, order]
            setattr(module, name, linear_from(weight, bias, like))
        weight, bias = fold_bn_before(mlp.fc1.weight, mlp.fc1.bias,
                                      block.norm)
        module.fc1 = linear_from(weight, bias, like)
        module.fc2 = linear_from(mlp.fc2.weight, mlp.fc2.bias, like)
        return module.to(like.device)

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C)."""
        y = x
        H, W = x.shape[1:3]
        if self.pad_to_window:
            k = self.kernel_size
            y = F.pad(x, (0, 0, 0, -W % k, 0, -H % k))
        y = self.depthwise(
            linear(y, self.pointwise_in.weight, self.pointwise_in.bias,
                   relu=True))
        if self.pad_to_window:
            y = y[:, :H, :W]
        x = x + linear(y, self.pointwise_out.weight, self.pointwise_out.bias)
        return x + mlp(x, self.fc1, self.fc2)


def check_deploy_form(norm_type, ablations):
    """Refuse, naming the fix, what the deploy form cannot fold.

    Args:
        norm_type (str): The blocks' ``norm_cfg`` type.
        ablations (dict): The ablation options that are on.
    """
    if norm_type not in ('BN', 'BN2d', 'SyncBN'):
        # CC-BN is a _BatchNorm too, but its calibration does not fold.
        raise TypeError(
            'The deploy form folds BatchNorm (norm_cfg type=\'BN\' or '
            f'\'SyncBN\') into the layers beside it; norm_cfg '
            f'type={norm_type!r} has no deploy form. Use the '
            'training form (deploy=False) in eval mode; it exports to '
            'ONNX as well')
    if ablations:
        raise ValueError(
            'DWNet has no deploy form for the ablation options '
            f'{ablations}: the deploy form folds BatchNorm into the '
            'convs beside it and runs the paper\'s main blocks only. Use '
            'the training form (deploy=False) in eval mode; it exports '
            'to ONNX as well')


def fuse_children(module):
    """Replace every descendant that has a deploy form (``fuse()``) by it,
    as RepVGG-style models reparameterize."""
    for name, child in module.named_children():
        if hasattr(child, 'fuse'):
            setattr(module, name, child.fuse())
        else:
            fuse_children(child)

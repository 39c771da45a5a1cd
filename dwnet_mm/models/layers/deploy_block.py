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
import torch.nn as nn
import torch.nn.functional as F

from dwnet_mm.ops import LinearWeights, linear_relu, mlp, residual_linear
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

    Attributes:
        inplace (bool): Without autograd, update the input (the residual
            stream) in place and return it. Set by the owner of the input:
            :class:`DWNet` sets it for its blocks. Defaults to False.
        workspace (MlpWorkspace, optional): The MLP's hidden buffer, shared
            by the blocks of a model. Defaults to None: a new one per call.
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
        self.inplace = False
        self.workspace = None

    @classmethod
    def from_block(cls, block):
        """Fold a training-form :class:`DWNetBlock` (eval semantics)."""
        mixer, mlp = block.mixer, block.mlp
        like = mlp.fc1.weight
        module = cls(mlp.fc1.in_features, mlp.fc1.out_features,
                     mixer.depthwise.fuse(mixer.depthwise_norm),
                     block.kernel_size, block.pad_to_window)
        for name in ('pointwise_in', 'pointwise_out'):
            conv_module = getattr(mixer, name)
            conv = conv_module.conv
            if conv.kernel_size != (1, 1) or conv.groups != 1:
                raise TypeError(f'{name} must be an ungrouped 1x1 conv')
            weight, bias = fold_bn_after(conv.weight.flatten(1), conv.bias,
                                         conv_module.norm)
            setattr(module, name, linear_from(weight, bias, like))
        weight, bias = fold_bn_before(mlp.fc1.weight, mlp.fc1.bias,
                                      block.norm)
        module.fc1 = linear_from(weight, bias, like)
        module.fc2 = linear_from(mlp.fc2.weight, mlp.fc2.bias, like)
        return module.to(like.device)

    def forward(self, x):
        """(N, H, W, C) -> (N, H, W, C)."""
        x = x.contiguous()
        y = x
        H, W = x.shape[1:3]
        if self.pad_to_window:
            k = self.kernel_size
            y = F.pad(x, (0, 0, 0, -W % k, 0, -H % k))
        y, pointwise_out = self.mix(y)
        if self.pad_to_window:
            y = y[:, :H, :W]
        x = residual_linear(x, y, pointwise_out, self.inplace)
        workspace = None if self.workspace is None else \
            self.workspace.get(x, self.fc1.out_features)
        return mlp(x, self.fc1, self.fc2, residual=True, inplace=True,
                   workspace=workspace, cache_packed=True)

    def mix(self, x):
        """``depthwise(pointwise_in(x))`` and the ``pointwise_out`` layer for
        it: reordered when the depth-wise op runs in another channel order
        (I-Dynamic, see :meth:`FoldedInhomogeneousDynamicConv2d.forward`)."""
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

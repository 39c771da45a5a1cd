"""Precision of each backend against a float64 run of the independent
reference (``tests/reference``): the fp32 training-mode forward, the input
gradient, the parameter gradients and the eval outputs after one SGD step,
for every conv type. The native kernels' error may be at most 1.5x that of
the PyTorch form (``pytorch_ops``), measured in the same way."""
import copy

import pytest
import torch
from reference.dwnet import ReferenceDWNet
from reference.weights import randomize_, relative_error, to_dwnet_mm

from dwnet_mm.models import DWNet
from dwnet_mm.ops import native_ops, pytorch_ops

ARCH = dict(channels=[32, 64, 128, 256], depths=[2, 1, 2, 1])
GROUPS = 8  # a multiple of 8: the native I-Dynamic kernels take it
CONV_TYPES = ('static', 'dynamic', 'i_dynamic')
LR = 1e-3
# Rounding of fp32 itself: errors under this are not compared as ratios.
FLOOR = 1e-7


def train_step(model, x, seed=2):
    """Forward in train mode (BatchNorms on their running statistics: batch
    statistics of 2 images on 3x3 maps would amplify every rounding error
    by orders of magnitude), backward of a fixed random projection of the
    outputs, an SGD step, then the eval outputs; returns (outputs, input
    gradient, {name: gradient}, outputs after the step)."""
    x = x.clone().requires_grad_(True)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    outs = model(x)
    generator = torch.Generator().manual_seed(seed)
    loss = sum((out * torch.randn(out.shape, generator=generator,
                                  dtype=torch.float64).to(out)).sum()
               for out in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad
        model.eval()
        after = model(x.detach())
    return [o.detach() for o in outs], x.grad, grads, after


def errors(got, want):
    """Relative errors of each quantity of :func:`train_step` (parameter
    gradients as one vector, in the reference's names)."""
    outs, grad_x, grads, after = got
    ref_outs, ref_grad_x, ref_grads, ref_after = want
    names = {name: to_dwnet_mm({name: None}).popitem()[0]
             for name in ref_grads}
    return dict(
        forward=max(relative_error(a, b) for a, b in zip(outs, ref_outs)),
        input_grad=relative_error(grad_x, ref_grad_x),
        param_grads=relative_error(
            torch.cat([grads[names[n]].flatten() for n in ref_grads]),
            torch.cat([g.flatten() for g in ref_grads.values()])),
        after_step=max(relative_error(a, b) for a, b in zip(after,
                                                            ref_after)))


@pytest.mark.skipif(native_ops() is None, reason='no native kernels here')
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_native_within_1_5x_of_pytorch_form(conv_type):
    reference = ReferenceDWNet(ARCH['channels'], ARCH['depths'], conv_type,
                               7, i_dynamic_groups=GROUPS, dense=True)
    randomize_(reference, seed=0)
    model = DWNet(arch=ARCH, conv_type=conv_type, i_dynamic_groups=GROUPS,
                  out_type='featmap', out_indices=(0, 1, 2, 3))
    model.load_state_dict(to_dwnet_mm(reference.state_dict()), strict=True)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 96, 112, generator=generator)

    want = train_step(reference.double(), x.double())
    native = errors(train_step(copy.deepcopy(model), x), want)
    with pytorch_ops():
        pytorch = errors(train_step(copy.deepcopy(model), x), want)
    for name, error in native.items():
        assert error < 1e-4, (name, native, pytorch)
        assert error <= 1.5 * max(pytorch[name], FLOOR), (name, native,
                                                          pytorch)

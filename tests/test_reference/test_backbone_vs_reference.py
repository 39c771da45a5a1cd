"""DWNet against the independent reference (``tests/reference``), backbone
alone: every conv_type, classification and dense outputs, pad_to_window on
and off, odd sizes; the training form, the deploy form and the PyTorch-ops
fallback in eval; gradients and BN statistics in train mode; the documented
checkpoint routes; on the CPU, and on CUDA where a GPU is present (TF32 off,
``conftest.py``). Weights and BN statistics are random."""
import pytest
import torch
from torch import nn
from reference.dwnet import ReferenceDWNet
from reference.weights import randomize_, relative_error, to_dwnet_mm

from dwnet_mm.models import DWNet
from dwnet_mm.ops import set_native, set_triton

ARCH = dict(channels=[32, 64, 128, 256], depths=[2, 1, 2, 1])
GROUPS = 8  # I-Dynamic channel groups of ARCH (4..32 channels each)
CONV_TYPES = ('static', 'dynamic', 'i_dynamic')
SIZES = [(1, 250, 330), (2, 224, 224)]
FP32_TOL = 1e-4
FP64_TOL = 1e-10
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA'))]


def build_pair(conv_type, dense, pad_to_window=False, seed=0, kernel_size=7,
               **dwnet_args):
    """The reference with random weights, and DWNet given the same."""
    reference = ReferenceDWNet(ARCH['channels'], ARCH['depths'], conv_type,
                               kernel_size, i_dynamic_groups=GROUPS,
                               pad_to_window=pad_to_window, dense=dense)
    randomize_(reference, seed)
    model = DWNet(arch=ARCH, conv_type=conv_type, i_dynamic_groups=GROUPS,
                  kernel_size=kernel_size, pad_to_window=pad_to_window,
                  out_type='featmap' if dense else 'avg_featmap',
                  out_indices=(0, 1, 2, 3) if dense else -1, **dwnet_args)
    model.load_state_dict(to_dwnet_mm(reference.state_dict()), strict=True)
    return reference, model


def image(batch, height, width, seed=1, dtype=torch.float32, device='cpu'):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator,
                       dtype=torch.float64).to(device, dtype)


def assert_outputs_equal(outs, expected, tol):
    assert len(outs) == len(expected)
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape
        # The layout contract: plain contiguous tensors leave the backbone.
        assert out.is_contiguous(), out.stride()
        error = relative_error(out, ref)
        assert error < tol, error


@pytest.mark.parametrize('form', ['training', 'deploy', 'pytorch_ops'])
@pytest.mark.parametrize('dense,pad_to_window', [(False, False),
                                                 (True, False), (True, True)])
@pytest.mark.parametrize('conv_type', CONV_TYPES)
@pytest.mark.parametrize('device', DEVICES)
def test_eval_outputs(device, conv_type, dense, pad_to_window, form,
                      monkeypatch):
    reference, model = build_pair(conv_type, dense, pad_to_window)
    assert_eval_outputs_equal(model, reference, form, monkeypatch, device)


def assert_eval_outputs_equal(model, reference, form, monkeypatch,
                              device='cpu'):
    """Eval outputs at :data:`SIZES`, DWNet in ``form``: 'training',
    'deploy' or 'pytorch_ops' (no native or Triton kernels)."""
    reference.to(device).eval(), model.to(device).eval()
    if form == 'deploy':
        model.switch_to_deploy()
    if form == 'pytorch_ops':
        set_native(False), set_triton(False)
    with torch.no_grad():
        for batch, height, width in SIZES:
            x = image(batch, height, width, device=device)
            assert_outputs_equal(model(x), reference(x), FP32_TOL)


@pytest.mark.parametrize('form', ['training', 'deploy'])
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_eval_outputs_float64(conv_type, form):
    reference, model = build_pair(conv_type, dense=True, pad_to_window=True)
    reference.double().eval(), model.double().eval()
    if form == 'deploy':
        model.switch_to_deploy()
    x = image(1, 250, 330, dtype=torch.float64)
    with torch.no_grad():
        assert_outputs_equal(model(x), reference(x), FP64_TOL)


@pytest.mark.parametrize('form', ['training', 'deploy'])
@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_even_kernel(conv_type, form):
    """12x12 kernels (the 384 fine-tune) cover offsets -6..+5."""
    reference, model = build_pair(conv_type, dense=True, kernel_size=12)
    reference.eval(), model.eval()
    if form == 'deploy':
        model.switch_to_deploy()
    x = image(1, 117, 141)
    with torch.no_grad():
        assert_outputs_equal(model(x), reference(x), FP32_TOL)


def train_step(model, x, seed=2, frozen_norms=False):
    """Forward in train mode and backward of a fixed random projection of
    every output; returns the input gradient. ``frozen_norms`` keeps the
    BatchNorms in eval mode."""
    x = x.clone().requires_grad_(True)
    model.train()
    if frozen_norms:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    outs = model(x)
    generator = torch.Generator().manual_seed(seed)
    # Drawn on the CPU: the same projection on every device.
    loss = sum((out * torch.randn(out.shape, generator=generator,
                                  dtype=torch.float64).to(out)).sum()
               for out in outs)
    loss.backward()
    return x.grad


def assert_gradients_equal(model, reference, x, tol, frozen_norms,
                           norm_abbr='bn'):
    grad_x = train_step(model, x, frozen_norms=frozen_norms)
    grad_x_ref = train_step(reference, x, frozen_norms=frozen_norms)
    assert relative_error(grad_x, grad_x_ref) < tol
    params = dict(model.named_parameters())
    ref_params = dict(reference.named_parameters())
    for name, param in ref_params.items():
        mine = params[to_dwnet_mm({name: None},
                                  norm_abbr=norm_abbr).popitem()[0]]
        # A conv bias followed by train-mode BN has an analytic gradient of
        # zero; its rounding noise is measured against its layer's weights.
        layer = name.rsplit('.', 1)[0] + '.'
        scale = max(p.grad.abs().max() for n, p in ref_params.items()
                    if n.startswith(layer) or n == name)
        # A layer behind a ReLU that is off for every sample (an SE gate's
        # narrow hidden layer can be) has gradients of exactly zero.
        scale = scale.clamp_min(torch.finfo(scale.dtype).tiny)
        error = ((mine.grad - param.grad).abs().max() / scale).item()
        assert error < tol, (name, error)


def assert_norm_statistics_equal(model, reference, tol):
    buffers = dict(model.named_buffers())
    for name, buffer in reference.named_buffers():
        mine = buffers[to_dwnet_mm({name: None}).popitem()[0]]
        if name.endswith('num_batches_tracked'):
            assert mine.item() == buffer.item() == 1, name
        else:
            assert relative_error(mine, buffer) < tol, name


@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_train_step_float64(conv_type):
    """One full train-mode step in float64: the gradients of the input and
    of every parameter, and the BN running statistics (drop_path 0)."""
    reference, model = build_pair(conv_type, dense=True, pad_to_window=True)
    reference.double(), model.double()
    x = image(2, 122, 90, dtype=torch.float64)
    assert_gradients_equal(model, reference, x, FP64_TOL, frozen_norms=False)
    assert_norm_statistics_equal(model, reference, FP64_TOL)


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('conv_type', CONV_TYPES)
@pytest.mark.parametrize('device', DEVICES)
def test_train_step_float32(device, conv_type, with_cp):
    """float32 runs the native backward kernels. Train-mode BN over the
    two pooled samples of a dynamic kernel generator is ill-conditioned
    (float32 runs of the reference itself differ from float64 by up to
    2e-2), so the gradients are compared with the norms frozen, and the
    running statistics in a separate full train-mode forward. ``with_cp``
    recomputes each block in backward; the statistics must still be
    updated once per step."""
    reference, model = build_pair(conv_type, dense=True, with_cp=with_cp)
    reference.to(device), model.to(device)
    x = image(2, 90, 122, device=device)
    assert_gradients_equal(model, reference, x, FP32_TOL, frozen_norms=True)
    reference, model = build_pair(conv_type, dense=True, with_cp=with_cp)
    reference.to(device), model.to(device)
    train_step(model, x), train_step(reference, x)
    assert_norm_statistics_equal(model, reference, FP32_TOL)


@pytest.mark.parametrize('conv_type', CONV_TYPES)
def test_authors_checkpoint_through_init_cfg(conv_type, tmp_path):
    """The documented route for the authors' files: a classification file
    (``model``) and a dense one (``state_dict`` with ``backbone.``), read by
    the Pretrained init_cfg."""
    x = image(1, 250, 330)
    for dense in (False, True):
        reference = ReferenceDWNet(ARCH['channels'], ARCH['depths'],
                                   conv_type, i_dynamic_groups=GROUPS,
                                   pad_to_window=dense, dense=dense)
        randomize_(reference, seed=3).eval()
        state_dict = reference.state_dict()
        if dense:
            checkpoint = {'state_dict': {f'backbone.{k}': v
                                         for k, v in state_dict.items()}}
        else:
            checkpoint = {'model': state_dict}
        path = tmp_path / f'authors_{int(dense)}.pth'
        torch.save(checkpoint, path)
        model = DWNet(arch=ARCH, conv_type=conv_type, i_dynamic_groups=GROUPS,
                      pad_to_window=dense,
                      out_type='featmap' if dense else 'avg_featmap',
                      out_indices=(0, 1, 2, 3) if dense else -1,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        with torch.no_grad():
            assert_outputs_equal(model.eval()(x), reference(x), FP32_TOL)
            deployed = DWNet(
                arch=ARCH, conv_type=conv_type, i_dynamic_groups=GROUPS,
                pad_to_window=dense, deploy=True,
                out_type='featmap' if dense else 'avg_featmap',
                out_indices=(0, 1, 2, 3) if dense else -1,
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
            deployed.init_weights()
            assert_outputs_equal(deployed.eval()(x), reference(x), FP32_TOL)


def test_reference_catches_a_wrong_model():
    """The comparison can fail: one BN statistic changed is seen."""
    reference, model = build_pair('static', dense=True)
    with torch.no_grad():
        model.stages[2].blocks[0].mixer.depthwise.norm.running_var[5] *= 2
        x = image(1, 96, 96)
        errors = [relative_error(o, r) for o, r in
                  zip(model.eval()(x), reference.eval()(x))]
    assert errors[:2] == [0, 0] or max(errors[:2]) < FP32_TOL
    assert min(errors[2:]) > 1e-3

"""The paper's ablation options of DWNet (Tables 6, 9, 10, 12) against the
independent reference, extended for them (``tests/reference/dwnet.py``):
eval outputs in the training form and on PyTorch's ops, a float64 train
step (every gradient and norm statistic), refusal of the deploy form, and
ONNX export of the training form. Weights and norm statistics are random."""
import pytest
import torch
from reference.dwnet import ReferenceDWNet
from reference.weights import randomize_, relative_error, to_dwnet_mm
from test_backbone_vs_reference import (ARCH, FP32_TOL, FP64_TOL,
                                        assert_eval_outputs_equal,
                                        assert_gradients_equal,
                                        assert_norm_statistics_equal,
                                        assert_outputs_equal, image)

from dwnet_mm.models import DWNet

# name: (DWNet's options, the reference's)
ABLATIONS = {
    'se': (dict(se_ratio=1 / 16), dict(se_ratio=1 / 16)),
    'extra_dw': (dict(extra_dw=True), dict(extra_dw=True)),
    'extra_dw_se': (dict(extra_dw=True, extra_dw_se_ratio=1 / 8),
                    dict(extra_dw=True, extra_dw_se_ratio=1 / 8)),
    # 32 channels per kernel in every stage of ARCH, like Swin-T's heads.
    'shared_dw': (dict(dw_weight_groups=(1, 2, 4, 8)),
                  dict(dw_weight_groups=[1, 2, 4, 8])),
    'layer_norm': (dict(norm_cfg=dict(type='LN2d')), dict(norm='LN')),
    'cc_bn': (dict(norm_cfg=dict(type='CCBN')), dict(norm='CCBN')),
    'all': (dict(se_ratio=1 / 16, extra_dw=True, extra_dw_se_ratio=1 / 16,
                 dw_weight_groups=(1, 2, 4, 8), norm_cfg=dict(type='CCBN')),
            dict(se_ratio=1 / 16, extra_dw=True, extra_dw_se_ratio=1 / 16,
                 dw_weight_groups=[1, 2, 4, 8], norm='CCBN')),
}


def build_pair(ablation, dense, kernel_size=7, seed=0, **dwnet_args):
    """The reference with random weights and norm statistics, and DWNet
    given the same through the reference's key map."""
    options, reference_options = ABLATIONS[ablation]
    reference = ReferenceDWNet(ARCH['channels'], ARCH['depths'], 'static',
                               kernel_size, pad_to_window=dense, dense=dense,
                               **reference_options)
    randomize_(reference, seed)
    model = DWNet(arch=ARCH, kernel_size=kernel_size, pad_to_window=dense,
                  out_type='featmap' if dense else 'avg_featmap',
                  out_indices=(0, 1, 2, 3) if dense else -1, **options,
                  **dwnet_args)
    model.load_state_dict(to_dwnet_mm(reference.state_dict(),
                                      norm_abbr=norm_abbr(ablation)),
                          strict=True)
    return reference, model


def norm_abbr(ablation):
    """The name mmcv's ConvModule gives the DW-block's 1x1 conv norms."""
    return 'ln' if ablation == 'layer_norm' else 'bn'


@pytest.mark.parametrize('form', ['training', 'pytorch_ops'])
@pytest.mark.parametrize('dense', [False, True])
@pytest.mark.parametrize('ablation', ABLATIONS)
def test_eval_outputs(ablation, dense, form, monkeypatch):
    reference, model = build_pair(ablation, dense)
    assert_eval_outputs_equal(model, reference, form, monkeypatch)


@pytest.mark.parametrize('ablation', ['extra_dw_se', 'shared_dw'])
def test_even_kernel(ablation):
    reference, model = build_pair(ablation, dense=True, kernel_size=12)
    with torch.no_grad():
        x = image(1, 117, 141)
        assert_outputs_equal(model.eval()(x), reference.eval()(x), FP32_TOL)


@pytest.mark.parametrize('ablation', ABLATIONS)
def test_train_step_float64(ablation):
    """Gradients of the input and of every parameter (the shared kernels,
    the SE layers, the centering weights among them) and the norms'
    running statistics after one train-mode step."""
    reference, model = build_pair(ablation, dense=True)
    reference.double(), model.double()
    x = image(2, 122, 90, dtype=torch.float64)
    assert_gradients_equal(model, reference, x, FP64_TOL, frozen_norms=False,
                           norm_abbr=norm_abbr(ablation))
    assert_norm_statistics_equal(model, reference, FP64_TOL)


def test_with_cp_train_step():
    """Gradient checkpointing recomputes the extra conv and the SE gates:
    the same gradients and statistics (updated once)."""
    x = image(2, 90, 122)
    reference, model = build_pair('all', dense=True, with_cp=True)
    reference.double(), model.double()
    x = x.double()
    assert_gradients_equal(model, reference, x, FP64_TOL, frozen_norms=False)
    assert_norm_statistics_equal(model, reference, FP64_TOL)


def test_reference_sees_the_options():
    """Each option changes the function: a model built without it, given
    the shared weights, differs from the reference."""
    reference, _ = build_pair('all', dense=False)
    plain = DWNet(arch=ARCH, out_type='avg_featmap', out_indices=-1,
                  se_ratio=1 / 16,
                  extra_dw=True, extra_dw_se_ratio=1 / 16,
                  dw_weight_groups=(1, 2, 4, 8))  # BN, not CC-BN
    state = to_dwnet_mm(reference.state_dict())
    state = {k: v for k, v in state.items() if 'centering_weight' not in k}
    plain.load_state_dict(state, strict=True)
    x = image(1, 96, 96)
    with torch.no_grad():
        error = relative_error(plain.eval()(x)[0], reference.eval()(x)[0])
    assert error > 1e-2


@pytest.mark.parametrize('ablation', ABLATIONS)
def test_deploy_form_refused(ablation):
    options = ABLATIONS[ablation][0]
    if 'norm_cfg' in options:
        error, match = TypeError, options['norm_cfg']['type'] + \
            "' has no deploy form"
    else:
        error, match = ValueError, f'no deploy form.*{next(iter(options))}'
    with pytest.raises(error, match=match):
        DWNet(arch=ARCH, deploy=True, **options)
    with pytest.raises(error, match='deploy=False'):
        DWNet(arch=ARCH, **options).switch_to_deploy()


def test_shared_kernels_need_static_conv_and_divisible_widths():
    with pytest.raises(ValueError, match='conv_type="static"'):
        DWNet(arch=ARCH, conv_type='dynamic', dw_weight_groups=4)
    with pytest.raises(ValueError, match='must divide the stage width 32'):
        DWNet(arch=ARCH, dw_weight_groups=(3, 6, 12, 24))
    with pytest.raises(ValueError, match='one value per stage'):
        DWNet(arch=ARCH, dw_weight_groups=(1, 2))
    with pytest.raises(ValueError, match='needs extra_dw=True'):
        DWNet(arch=ARCH, extra_dw_se_ratio=1 / 16)


def test_onnx_export_of_the_training_form(tmp_path):
    """Every option at once, exported with dynamic sizes and run in ONNX
    Runtime at another batch and an odd size, against the reference."""
    pytest.importorskip('onnxruntime')
    from dwnet_mm.export import (export_onnx, onnxruntime_session,
                                 run_onnxruntime)
    reference, model = build_pair('all', dense=True)
    reference.eval(), model.eval()
    path = str(tmp_path / 'all.onnx')
    export_onnx(model, image(2, 96, 128), path)
    session = onnxruntime_session(path)
    x = image(1, 250, 330)
    outs = run_onnxruntime(session, x)
    with torch.no_grad():
        expected = reference(x)
    for out, ref in zip(outs, expected):
        assert relative_error(torch.as_tensor(out), ref) < FP32_TOL

"""Mixed precision against the independent reference: DWNet under
``torch.autocast`` (bf16, and fp16 on CUDA) against the reference in fp32
(TF32 off), same random weights and BN statistics, eval mode: the backbone
in its training and deploy forms, the mmpretrain classifier, the UPerNet
segmentor, and the Cascade Mask R-CNN's backbone + FPN (which need none of
mmcv's compiled ops; the whole detector in fp32 is in
``test_pipelines_vs_reference.py``).

Tolerances (relative L2 error of each output): bf16 keeps 8 significant
bits (unit roundoff 2**-9 = 2e-3) and fp16 11 (2**-12 = 2.4e-4). Through
the backbone's rounded convs and matmuls the errors measured on the CPU
(backbone, every conv type and form, 1x3x250x330) were 7e-3 to 1.4e-2 in
bf16 and 1.0e-3 to 1.5e-3 in fp16, 4-7x the unit roundoff; the tolerances
are about 3x the largest. One BN's running variance of one block scaled by
4 is still seen in bf16 (``test_a_wrong_model_misses_the_bf16_tolerance``)."""
import pytest
import torch
from test_backbone_vs_reference import build_pair, image
from test_pipelines_vs_reference import pair, seg_run
from reference.weights import relative_error

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
# (device, dtype): bf16 on the CPU and on CUDA, fp16 on CUDA (the CPU's
# autocast runs fp16 convs in slow reference kernels nobody trains with).
PRECISIONS = [
    pytest.param('cpu', 'bf16', id='cpu-bf16'),
    pytest.param('cuda', 'bf16', id='cuda-bf16', marks=CUDA),
    pytest.param('cuda', 'fp16', id='cuda-fp16', marks=CUDA),
]
DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
TOL = {'bf16': 4e-2, 'fp16': 5e-3}
CONV_TYPES = ('static', 'dynamic', 'i_dynamic')
CLS_CONFIGS = {
    'static': 'cls/dwnet-tiny_8xb128_in1k.py',
    'dynamic': 'cls/dynamic-dwnet-tiny_8xb128_in1k.py',
    'i_dynamic': 'cls/i-dynamic-dwnet-tiny_8xb128_in1k.py',
}
DET_CONFIGS = {
    'static': 'det/cascade_dwnet_tiny_3x.py',
    'dynamic': 'det/cascade_dynamic_dwnet_tiny_3x.py',
    'i_dynamic': 'det/cascade_i_dynamic_dwnet_tiny_3x.py',
}


def autocast(device, dtype):
    return torch.autocast(device, dtype=DTYPES[dtype])


def assert_close(outs, expected, tol):
    assert len(outs) == len(expected) > 0
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape
        assert torch.isfinite(out).all()
        error = relative_error(out.float(), ref)
        assert error < tol, error


@pytest.mark.parametrize('form', ['training', 'deploy'])
@pytest.mark.parametrize('conv_type', CONV_TYPES)
@pytest.mark.parametrize('device,dtype', PRECISIONS)
def test_backbone_autocast(device, dtype, conv_type, form):
    reference, model = build_pair(conv_type, dense=True, pad_to_window=True)
    reference.to(device).eval(), model.to(device).eval()
    if form == 'deploy':
        model.switch_to_deploy()
    x = image(1, 250, 330, device=device)
    with torch.no_grad():
        expected = reference(x)
        with autocast(device, dtype):
            outs = model(x)
    assert all(out.is_contiguous() for out in outs)
    assert_close(outs, expected, TOL[dtype])


def test_a_wrong_model_misses_the_bf16_tolerance():
    reference, model = build_pair('static', dense=True, pad_to_window=True)
    with torch.no_grad():
        model.stages[2].blocks[0].mixer.depthwise.norm.running_var *= 4
        x = image(1, 96, 96)
        errors = [relative_error(o, r) for o, r in
                  zip(model.eval()(x), reference.eval()(x))]
    assert max(errors[:2]) < 1e-4  # stages before the change
    assert min(errors[2:]) > 2 * TOL['bf16'], errors


@pytest.mark.parametrize('conv_type', CONV_TYPES)
@pytest.mark.parametrize('device,dtype', PRECISIONS)
def test_classifier_autocast(device, dtype, conv_type, tmp_path):
    model, reference = pair(CLS_CONFIGS[conv_type], 'mmpretrain', 'training',
                            tmp_path)
    model.to(device), reference.to(device)
    x = image(2, 224, 224, device=device)
    with torch.no_grad():
        expected = reference(x, mode='tensor')
        with autocast(device, dtype):
            logits = model(x, mode='tensor')
    assert_close([logits], [expected], TOL[dtype])


@pytest.mark.parametrize('device,dtype', PRECISIONS)
def test_segmentor_autocast(device, dtype, tmp_path):
    if device == 'cpu':
        pytest.skip('CUDA only: bf16 convolutions of UPerHead\'s 512-channel '
                    'maps take minutes on CPUs without bf16 units')
    model, reference = pair('seg/upernet_dwnet_tiny_160k_ade20k.py', 'mmseg',
                            'training', tmp_path)
    model.to(device), reference.to(device)
    x = image(1, 250, 330, device=device)
    expected, _ = seg_run(reference, x)
    with autocast(device, dtype):
        outputs, _ = seg_run(model, x)
    # seg_logits: the decode head's output, resized (its own forward hook
    # never fires: decode_head.predict calls its forward directly).
    for name in ('auxiliary_head', 'seg_logits'):
        assert_close(outputs[name], expected[name], TOL[dtype])


def backbone_and_fpn(model, x):
    with torch.no_grad():
        return list(model.extract_feat(x))


@pytest.mark.parametrize('conv_type', list(DET_CONFIGS))
@pytest.mark.parametrize('device,dtype', [
    pytest.param('cpu', 'fp32', id='cpu-fp32'),
    pytest.param('cuda', 'fp32', id='cuda-fp32', marks=CUDA)] + PRECISIONS)
def test_cascade_backbone_and_fpn(device, dtype, conv_type, tmp_path):
    if device == 'cpu':
        pytest.skip('CUDA only: on the CPU, test_pipelines_vs_reference '
                    'compares whole detectors, and gpu_check '
                    '--without-mmcv-ops this path (minutes per case here)')
    model, reference = pair(DET_CONFIGS[conv_type], 'mmdet', 'training',
                            tmp_path)
    model.to(device), reference.to(device)
    x = image(1, 250, 330, device=device)
    expected = backbone_and_fpn(reference, x)
    if dtype == 'fp32':
        outs = backbone_and_fpn(model, x)
        tol = 1e-4
    else:
        with autocast(device, dtype):
            outs = backbone_and_fpn(model, x)
        tol = TOL[dtype]
    assert len(outs) == 5  # P2-P6
    assert_close(outs, expected, tol)

"""Whole models of the shipped configs against the same models built around
the independent reference backbone (``type='ReferenceDWNet'``), with the
same random weights and BN statistics: the Cascade Mask R-CNN detectors
(FPN outputs, RoI features through the config's own mmcv RoIAlign, box and
mask head outputs of every cascade stage, final predictions), the UPerNet
segmentor and the mmpretrain classifier; DWNet in its training form, its
deploy form, on PyTorch ops, and loaded from an authors'-layout checkpoint
through the documented converters."""
import importlib
import importlib.util
import os.path as osp
import sys
from collections import defaultdict

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData
from reference.backbone import reference_backbone_cfg
from reference.weights import randomize_, relative_error, to_dwnet_mm

import dwnet_mm  # noqa: F401  (registers DWNet)
from dwnet_mm.ops import set_native, set_triton

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOL = 1e-4
FORMS = ['training', 'deploy', 'pytorch_ops', 'authors_checkpoint']
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA'))]


def load_tool(name):
    path = osp.join(REPO, 'tools', 'model_converters', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(config, scope, reference, edit=None):
    """The config's model in eval mode, with DWNet or the reference as its
    backbone, SyncBN as BN (one process), no pretrained weights."""
    pytest.importorskip({'mmdet': 'mmdet', 'mmseg': 'mmseg',
                         'mmpretrain': 'mmpretrain'}[scope])
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    init_default_scope(scope)
    registry = {
        'mmdet': 'mmdet.registry', 'mmseg': 'mmseg.registry',
        'mmpretrain': 'mmpretrain.registry'
    }[scope]
    models = importlib.import_module(registry).MODELS
    cfg.model.backbone.init_cfg = None
    if edit:
        edit(cfg.model)
    if reference:
        cfg.model.backbone = reference_backbone_cfg(cfg.model.backbone)
    return revert_sync_batchnorm(models.build(cfg.model)).eval()


def pair(config, scope, form, tmp_path, edit=None, convert=None):
    """(DWNet model, reference model) with the same random weights.

    ``convert(path_in, path_out)`` runs the documented converter on an
    authors'-layout file for the 'authors_checkpoint' form."""
    reference = randomize_(build(config, scope, True, edit), seed=5)
    model = build(config, scope, False, edit)
    if form == 'authors_checkpoint':
        src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
        torch.save(authors_file(reference, scope), src)
        convert(str(src), str(dst))
        load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    else:
        model.load_state_dict(
            to_dwnet_mm(reference.state_dict(), prefix='backbone.'),
            strict=True)
    if form == 'deploy':
        model.backbone.switch_to_deploy()
    return model, reference


def authors_file(reference, scope):
    """What the authors' release holds for this model."""
    state_dict = reference.state_dict()
    if scope != 'mmpretrain':  # mmdet 2.x / mmseg 0.x full models
        return {'state_dict': state_dict, 'meta': {}}
    model = {k[len('backbone.'):]: v for k, v in state_dict.items()
             if k.startswith('backbone.')}
    model['head.weight'] = state_dict['head.fc.weight']
    model['head.bias'] = state_dict['head.fc.bias']
    return {'model': model, 'epoch': 300, 'max_accuracy': 81.3}


def record(model, names):
    """Forward hooks that store the outputs of the named submodules."""
    modules = dict(model.named_modules())
    outputs = defaultdict(list)
    for name in names:
        modules[name].register_forward_hook(
            lambda m, i, out, name=name: outputs[name].append(out))
    return outputs


def flat_tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat_tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flat_tensors(v)]
    return []


def assert_recorded_equal(outputs, expected):
    assert outputs.keys() == expected.keys()
    for name in expected:
        mine, ref = flat_tensors(outputs[name]), flat_tensors(expected[name])
        assert len(mine) == len(ref) > 0, name
        for a, b in zip(mine, ref):
            assert a.shape == b.shape, name
            error = relative_error(a, b)
            assert error < TOL, (name, error)


@pytest.fixture
def native_switch(monkeypatch):

    def apply(form):
        if form == 'pytorch_ops':
            set_native(False), set_triton(False)

    return apply


def image(batch, height, width, device='cpu'):
    generator = torch.Generator().manual_seed(11)
    return torch.randn(batch, 3, height, width,
                       generator=generator).to(device)


# ----------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------
DET_CONFIGS = ['det/cascade_dwnet_tiny_3x.py',
               'det/cascade_dynamic_dwnet_tiny_3x.py']


def fewer_proposals(model):
    # The real widths and heads; 100 proposals instead of 1000 keep the
    # three cascade stages within seconds on a CPU.
    model.test_cfg.rpn.max_per_img = 100
    model.test_cfg.rpn.nms_pre = 300


def det_samples(height, width):
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(
        img_shape=(height, width), ori_shape=(height, width),
        batch_input_shape=(height, width), pad_shape=(height, width),
        scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData()
    return [sample]


def det_run(model, x, proposals=None):
    """The detector's stages on ``x``: FPN outputs, RPN outputs, and the RoI
    head's predictions with every RoI extractor's and head's outputs
    recorded. The RoI head runs on ``proposals`` when given (the other
    model's), because near-equal RPN scores of random weights may be
    ranked differently by a 1e-6 difference, which reorders all RoIs."""
    samples = det_samples(*x.shape[-2:])
    heads = model.roi_head
    outputs = record(model, [
        f'roi_head.{part}.{i}' for part in ('bbox_roi_extractor', 'bbox_head',
                                            'mask_roi_extractor', 'mask_head')
        for i in range(heads.num_stages)
    ])
    with torch.no_grad():
        feats = model.extract_feat(x)
        outputs['neck'] = [feats]
        outputs['rpn_head'] = [model.rpn_head(feats)]
        if proposals is None:
            proposals = model.rpn_head.predict(feats, samples, rescale=False)
        results = heads.predict(feats, [p.clone() for p in proposals],
                                samples, rescale=True)
    return outputs, results[0], proposals


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('config', DET_CONFIGS)
def test_detector(config, form, device, tmp_path, native_switch):
    converter = load_tool('dwnet_det_to_mmdet')
    model, reference = pair(
        config, 'mmdet', form, tmp_path, edit=fewer_proposals,
        convert=lambda src, dst: converter.main([src, dst]))
    native_switch(form)
    model.to(device), reference.to(device)
    x = image(1, 250, 330, device)
    expected, wanted, proposals = det_run(reference, x)
    outputs, found, _ = det_run(model, x, proposals)
    assert_recorded_equal(outputs, expected)
    assert len(wanted) > 0
    assert torch.equal(found.labels, wanted.labels)
    assert relative_error(found.bboxes, wanted.bboxes) < TOL
    assert relative_error(found.scores, wanted.scores) < TOL
    differ = (found.masks != wanted.masks).float().mean().item()
    assert differ < 1e-4, differ
    # End to end, with its own RPN's proposals.
    _, own, _ = det_run(model, x)
    assert torch.equal(own.labels, wanted.labels)
    assert relative_error(own.bboxes, wanted.bboxes) < TOL
    assert relative_error(own.scores, wanted.scores) < TOL


def test_channels_last_features_would_be_read_wrong():
    """Why the contract matters: mmcv's RoIAlign reads channels-last maps
    as if they were NCHW (the bug DWNet's contiguous outputs fix)."""
    from mmcv.ops import RoIAlign
    feats = torch.randn(1, 16, 40, 50)
    rois = torch.tensor([[0., 10., 12., 90., 70.]])
    align = RoIAlign((7, 7), 1 / 4, 0)
    channels_last = feats.contiguous(memory_format=torch.channels_last)
    assert relative_error(align(channels_last, rois), align(feats, rois)) > .1


# ----------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------
def seg_run(model, x):
    from mmseg.structures import SegDataSample
    height, width = x.shape[-2:]
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), padding_size=[0, 0, 0, 0])
    outputs = record(model, ['decode_head'])
    with torch.no_grad():
        feats = model.extract_feat(x)
        aux = model.auxiliary_head(feats)
        result = model.predict(x, [SegDataSample(metainfo=meta)])[0]
    outputs['auxiliary_head'] = [aux]
    outputs['seg_logits'] = [result.seg_logits.data]
    return outputs, result.pred_sem_seg.data


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('form', FORMS)
def test_segmentor(form, device, tmp_path, native_switch):
    converter = load_tool('dwnet_seg_to_mmseg')
    model, reference = pair(
        'seg/upernet_dwnet_tiny_160k_ade20k.py', 'mmseg', form, tmp_path,
        convert=lambda src, dst: converter.main([src, dst]))
    native_switch(form)
    model.to(device), reference.to(device)
    x = image(1, 250, 330, device)
    outputs, labels = seg_run(model, x)
    expected, wanted = seg_run(reference, x)
    assert_recorded_equal(outputs, expected)
    assert (labels != wanted).float().mean().item() < 1e-4


# ----------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------
CLS_CONFIGS = ['cls/dwnet-tiny_8xb128_in1k.py',
               'cls/dynamic-dwnet-tiny_8xb128_in1k.py',
               'cls/i-dynamic-dwnet-tiny_8xb128_in1k.py']


def run_cls_converter(src, dst, monkeypatch):
    converter = load_tool('dwnet_to_mmpretrain')
    monkeypatch.setattr(sys, 'argv', ['dwnet_to_mmpretrain.py', src, dst])
    converter.main()


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('config', CLS_CONFIGS)
def test_classifier(config, form, device, tmp_path, native_switch,
                    monkeypatch):
    model, reference = pair(
        config, 'mmpretrain', form, tmp_path,
        convert=lambda src, dst: run_cls_converter(src, dst, monkeypatch))
    native_switch(form)
    model.to(device), reference.to(device)
    for batch, height, width in [(1, 250, 330), (2, 224, 224)]:
        x = image(batch, height, width, device)
        with torch.no_grad():
            logits = model(x, mode='tensor')
            expected = reference(x, mode='tensor')
        assert relative_error(logits, expected) < TOL
        assert torch.equal(logits.argmax(1), expected.argmax(1))

"""The demo configs: they inherit the real configs, run on CPU as given,
build in each framework's registry, and read the generated data."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import dwnet_mm  # noqa: F401
from dwnet_mm.demo import SEG_CLASSES, SHAPES, DemoDataSpec, generate_demo_data

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIGS = {
    # task: (demo config, the real config it must inherit)
    'cls': ('configs/cls/demo_dwnet-nano_shapes.py',
            './dwnet-tiny_8xb128_in1k.py'),
    'det': ('configs/det/demo_cascade_dwnet-nano_shapes.py',
            './cascade_dwnet_tiny_3x.py'),
    'seg': ('configs/seg/demo_upernet_dwnet-nano_shapes.py',
            './upernet_dwnet_tiny_160k_ade20k.py'),
}
SPEC = DemoDataSpec(
    cls_train_per_class=2, cls_val_per_class=1, det_train=2, det_val=2,
    seg_train=2, seg_val=2)


def load(task, data_root=None):
    cfg = Config.fromfile(osp.join(REPO, DEMO_CONFIGS[task][0]))
    if data_root is not None:
        sub = {'cls': 'imagenet', 'det': 'coco', 'seg': 'ade'}[task]
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[key].dataset.data_root = osp.join(data_root, sub)
    return cfg


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_cfg_data'))
    generate_demo_data(root, spec=SPEC)
    return root


def iter_dicts(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from iter_dicts(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from iter_dicts(value)


@pytest.mark.parametrize('task', list(DEMO_CONFIGS))
def test_inherits_the_real_config(task):
    path, base = DEMO_CONFIGS[task]
    with open(osp.join(REPO, path), encoding='utf-8') as f:
        text = f.read()
    assert f"_base_ = '{base}'" in text
    cfg = load(task)
    backbone = cfg.model.backbone
    assert backbone.type == 'DWNet'
    assert backbone.arch == dict(channels=[32, 64, 128, 256],
                                 depths=[1, 1, 2, 1])


@pytest.mark.parametrize('task', list(DEMO_CONFIGS))
def test_runs_on_a_cpu_as_given(task):
    cfg = load(task)
    # mmengine's AmpOptimWrapper asserts a GPU; SyncBN needs one too.
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    norms = [d['type'] for d in iter_dicts(cfg.model)
             if d.get('type') in ('SyncBN', 'MMSyncBN', 'BN')]
    assert 'SyncBN' not in norms and 'MMSyncBN' not in norms
    if task != 'cls':  # the real det/seg configs ask for SyncBN
        assert 'BN' in norms
    # No pretrained weights to download.
    init = cfg.model.backbone.get('init_cfg') or []
    assert all(i.get('type') != 'Pretrained' for i in iter_dicts(init))
    assert cfg.model.get('pretrained') is None
    assert cfg.get('load_from') is None
    # Data under data/demo, as tools/demo.py writes it.
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.data_root.startswith('data/demo/')


def test_class_names_match_the_generator():
    assert tuple(load('cls').classes) == SHAPES
    assert tuple(load('det').classes) == SHAPES
    seg = load('seg')
    assert tuple(seg.classes) == SEG_CLASSES
    assert len(seg.palette) == len(SEG_CLASSES)
    assert load('det').model.roi_head.mask_head.num_classes == len(SHAPES)
    assert all(h.num_classes == len(SHAPES)
               for h in load('det').model.roi_head.bbox_head)
    assert seg.model.decode_head.num_classes == len(SEG_CLASSES)


def test_cls_builds_and_reads_imagenet_folders(data_root):
    from mmpretrain.registry import DATASETS, MODELS
    cfg = load('cls', data_root)
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['classes'] == SHAPES
    assert len(dataset) == 2 * len(SHAPES)
    sample = dataset[0]
    assert sample['data_samples'].gt_label.item() == 0  # circle
    val = DATASETS.build(cfg.val_dataloader.dataset)
    labels = [val[i]['data_samples'].gt_label.item() for i in range(len(val))]
    assert labels == list(range(len(SHAPES)))
    batch = model.data_preprocessor(
        dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]))
    model.eval()
    with torch.no_grad():
        scores = model(batch['inputs'], mode='tensor')
    assert scores.shape == (1, len(SHAPES))


def test_det_builds_and_reads_coco_json(data_root):
    from mmdet.registry import DATASETS, MODELS
    cfg = load('det', data_root)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['classes'] == SHAPES
    assert len(dataset) == SPEC.det_train
    sample = dataset[0]
    gt = sample['data_samples'].gt_instances
    assert len(gt) >= 1
    assert gt.masks.masks.shape[1:] == (SPEC.det_size, SPEC.det_size)
    assert set(gt.labels.tolist()) <= set(range(len(SHAPES)))
    model.train()
    batch = model.data_preprocessor(
        dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]),
        training=True)
    losses = model(**batch, mode='loss')
    assert {'loss_rpn_cls', 's0.loss_cls', 's2.loss_mask'} <= set(losses)


def test_seg_builds_and_reduces_zero_label(data_root):
    from mmseg.registry import DATASETS, MODELS
    cfg = load('seg', data_root)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    assert dataset.metainfo['classes'] == SEG_CLASSES
    assert len(dataset) == SPEC.seg_val
    sample = dataset[0]
    labels = sample['data_samples'].gt_sem_seg.data
    values = set(labels.unique().tolist())
    # png 0 (outline) -> 255 ignored, 1 (background) -> 0, shapes -> 1..
    assert 255 in values and 0 in values
    assert values - {255} <= set(range(len(SEG_CLASSES)))
    batch = model.data_preprocessor(
        dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]))
    model.eval()
    with torch.no_grad():
        logits = model(batch['inputs'], mode='tensor')
    assert logits.shape[1] == len(SEG_CLASSES)

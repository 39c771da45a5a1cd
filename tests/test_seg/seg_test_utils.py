"""Helpers of the segmentation tests: shrunken configs, ADE20K fixture."""
import copy
import functools
import importlib.util
import os
import os.path as osp

import numpy as np
from mmengine.config import Config
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG_CONFIG_DIR = osp.join(REPO, 'configs', 'seg')
SEG_CONFIGS = {
    # config file -> (arch, conv_type)
    'upernet_dwnet_tiny_160k_ade20k.py': ('tiny', 'static'),
    'upernet_dwnet_base_160k_ade20k.py': ('base', 'static'),
    'upernet_dynamic_dwnet_tiny_160k_ade20k.py': ('tiny', 'dynamic'),
    'upernet_dynamic_dwnet_base_160k_ade20k.py': ('base', 'dynamic'),
    'upernet_i_dynamic_dwnet_tiny_160k_ade20k.py': ('tiny', 'i_dynamic'),
    'upernet_i_dynamic_dwnet_base_160k_ade20k.py': ('base', 'i_dynamic'),
}
TINY_CONFIG_OF = {
    'static': 'upernet_dwnet_tiny_160k_ade20k.py',
    'dynamic': 'upernet_dynamic_dwnet_tiny_160k_ade20k.py',
    'i_dynamic': 'upernet_i_dynamic_dwnet_tiny_160k_ade20k.py',
}

# A shrunken backbone and heads for CPU runs.
SMALL_ARCH = dict(channels=[16, 32, 64, 128], depths=[1, 1, 1, 1])
SMALL_I_DYNAMIC_GROUPS = 8
SMALL_DECODE_CHANNELS = 16
SMALL_AUX_CHANNELS = 8
SMALL_CROP = (64, 64)
# Resize target (long side, short side), the recipe's (2048, 512) shrunk
# for the fixture's 48x64 images.
SMALL_SCALE = (128, 64)

NUM_CLASSES = 150
# ADE20K annotations hold 0 (other / ignored) and the classes 1..150.
FIXTURE_LABELS = (0, 1, 2, 5, 150)


def load_authors_layout_helpers():
    """``authors_shapes`` and ``make_state_dict`` of the model tests."""
    path = osp.join(REPO, 'tests', 'test_models',
                    'test_checkpoint_loading.py')
    spec = importlib.util.spec_from_file_location('_dwnet_authors_layout',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.authors_shapes, module.make_state_dict


def load_seg_converter():
    """The converter script as a module (tools/ is not a package)."""
    path = osp.join(REPO, 'tools', 'model_converters',
                    'dwnet_seg_to_mmseg.py')
    spec = importlib.util.spec_from_file_location('_dwnet_seg_to_mmseg',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _parse_seg_config(config_name):
    return Config.fromfile(osp.join(SEG_CONFIG_DIR, config_name))


def load_seg_config(config_name):
    """A fresh copy of a seg config (parsed once per session: resolving the
    ``mmseg::`` bases reads mmseg's model-zoo metafiles, seconds a time)."""
    return copy.deepcopy(_parse_seg_config(config_name))


def _transform(pipeline, type_name):
    found = [t for t in pipeline if t['type'] == type_name]
    assert len(found) == 1, f'expected one {type_name} in {pipeline}'
    return found[0]


def shrink_model_cfg(model_cfg, conv_type):
    """Small widths and depths: the recipe stays, the model shrinks."""
    model_cfg.data_preprocessor.size = SMALL_CROP
    backbone = model_cfg.backbone
    backbone.arch = dict(SMALL_ARCH)
    backbone.init_cfg = None
    if conv_type == 'i_dynamic':
        backbone.i_dynamic_groups = SMALL_I_DYNAMIC_GROUPS
    model_cfg.decode_head.in_channels = list(SMALL_ARCH['channels'])
    model_cfg.decode_head.channels = SMALL_DECODE_CHANNELS
    model_cfg.auxiliary_head.in_channels = SMALL_ARCH['channels'][2]
    model_cfg.auxiliary_head.channels = SMALL_AUX_CHANNELS
    return model_cfg


def small_seg_config(config_name, data_root, work_dir, max_iters=2):
    """A real seg config, shrunk for a CPU run on the ADE20K fixture.

    Keeps the recipe (optimizer, schedulers, pipelines, heads, losses,
    evaluator) and changes only sizes, paths and worker counts.
    """
    cfg = load_seg_config(config_name)
    conv_type = SEG_CONFIGS[config_name][1]
    shrink_model_cfg(cfg.model, conv_type)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.env_cfg.cudnn_benchmark = False

    train_pipeline = cfg.train_dataloader.dataset.pipeline
    _transform(train_pipeline, 'RandomResize')['scale'] = SMALL_SCALE
    _transform(train_pipeline, 'RandomCrop')['crop_size'] = SMALL_CROP
    for key in ('val_dataloader', 'test_dataloader'):
        _transform(cfg[key].dataset.pipeline, 'Resize')['scale'] = \
            SMALL_SCALE
    # The TTA's scales, as ratios of SMALL_SCALE instead of (2048, 512).
    for resize in cfg.tta_pipeline[1]['transforms'][0]:
        width, height = resize['scale']
        resize['scale'] = (width * SMALL_SCALE[0] // 2048,
                           height * SMALL_SCALE[1] // 512)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = str(data_root)

    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters + 1
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = max_iters + 1
    cfg.default_hooks.checkpoint.save_last = False
    return cfg


def write_ade20k_fixture(root, num_train=4, num_val=3, size=(48, 64),
                         seed=0):
    """An ADE20K-layout folder: JPEG images and PNG label maps.

    ``images/{training,validation}/*.jpg`` and
    ``annotations/{training,validation}/*.png`` with the same stems; labels
    are in :data:`FIXTURE_LABELS` (0 = other, ignored by reduce_zero_label).

    Returns:
        dict: split -> list of label maps (H, W) uint8, in file order.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    labels = {}
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        for folder in (img_dir, ann_dir):
            os.makedirs(folder, exist_ok=True)
        labels[split] = []
        for i in range(count):
            stem = f'ADE_{split[:5]}_{i:08d}'
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(osp.join(img_dir, stem + '.jpg'))
            # Blocks of labels so that crops and resizes keep regions.
            block = rng.choice(np.array(FIXTURE_LABELS, dtype=np.uint8),
                               (h // 8, w // 8))
            label = np.kron(block, np.ones((8, 8), dtype=np.uint8))
            Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))
            labels[split].append(label)
    return labels

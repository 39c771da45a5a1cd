"""Helpers of the classification tests: paths and generated ImageNet."""
import importlib.util
import os.path as osp

import numpy as np
from PIL import Image

CLS_CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'cls')
WNIDS = ('n01440764', 'n01443537', 'n01484850')


def _write_jpeg(path, seed, size=(72, 80)):
    rng = np.random.default_rng(seed)
    # Class-independent noise on a random base color; content is irrelevant.
    base = rng.integers(0, 256, size=3)
    img = np.clip(base + rng.normal(0, 40, size=(*size, 3)), 0, 255)
    Image.fromarray(img.astype(np.uint8)).save(path, format='JPEG')


def make_imagenet(root, train_per_class=3, val_per_class=2, ann_file=False):
    """Write a tiny ImageNet-1K copy.

    Folder layout: ``train/<wnid>/<wnid>_<i>.JPEG`` and
    ``val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG``. With ``ann_file=True`` the
    validation images lie flat in ``val/`` (as in the real release) and
    ``meta/train.txt`` / ``meta/val.txt`` list "path label" lines.

    Returns:
        list[tuple[str, int]]: (val file name, label) in val number order.
    """
    root.mkdir(parents=True, exist_ok=True)
    lines = {'train': [], 'val': []}
    val_images = []
    seed = 0
    for label, wnid in enumerate(WNIDS):
        (root / 'train' / wnid).mkdir(parents=True)
        for i in range(train_per_class):
            name = f'{wnid}/{wnid}_{i}.JPEG'
            _write_jpeg(root / 'train' / name, seed)
            lines['train'].append(f'{name} {label}')
            seed += 1
    number = 1
    for label, wnid in enumerate(WNIDS):
        for _ in range(val_per_class):
            name = f'ILSVRC2012_val_{number:08d}.JPEG'
            rel = name if ann_file else f'{wnid}/{name}'
            (root / 'val' / osp.dirname(rel)).mkdir(
                parents=True, exist_ok=True)
            _write_jpeg(root / 'val' / rel, seed)
            lines['val'].append(f'{rel} {label}')
            val_images.append((name, label))
            number += 1
            seed += 1
    if ann_file:
        (root / 'meta').mkdir()
        for split, split_lines in lines.items():
            (root / 'meta' / f'{split}.txt').write_text(
                '\n'.join(split_lines) + '\n')
    return val_images


REPO_ROOT = osp.dirname(osp.dirname(CLS_CONFIG_DIR))


def load_module(relative_path, name):
    """Import a repository file that is not in a package (tools, tests)."""
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO_ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authors_checkpoint_helpers():
    """``authors_shapes`` / ``make_state_dict`` of the checkpoint tests."""
    return load_module('tests/test_models/test_checkpoint_loading.py',
                       '_dwnet_authors_checkpoint_helpers')


def converter_tool():
    return load_module('tools/model_converters/dwnet_to_mmpretrain.py',
                       '_dwnet_to_mmpretrain')

"""The README's "Use DWNet in your own mm project" recipes, run as printed.

Each recipe is read from README.md and written, unchanged, to ``recipe.py``;
a second config inherits it and only points it at a small generated dataset
(``dwnet_mm.demo``), shrinks the images, sets mmdet's heads to the data's 4
classes and a 2-iteration schedule. The framework's own ``tools/train.py``
(2 iterations) and ``tools/test.py`` (an evaluation of the checkpoint on the
held-out images), as shipped inside its package (``<package>/.mim/tools``),
run it in a subprocess where the other two frameworks cannot be imported, as
with only that framework's extra installed. The mmdet recipe's
``dwnet_tiny_224.pth`` is a randomly initialised DWNet-T written where the
tools run. The backbone is the recipe's DWNet-T.
"""
import os.path as osp
import re
import subprocess
import sys
import time

import pytest
import torch
from install_helpers import (blocking_env, framework_tool, readme_recipes,
                             write_import_blocker)

from dwnet_mm.demo.synthetic import SHAPES, DemoDataSpec, generate_demo_data
from dwnet_mm.utils.frameworks import FRAMEWORK_EXTRAS

# Metric of each framework's evaluator, as its test.py prints it.
METRICS = {
    'mmdet': 'coco/bbox_mAP',
    'mmseg': 'mIoU',
    'mmpretrain': 'accuracy/top1',
}

# What the test changes, appended to a config that inherits the recipe:
# data paths, image size, loaders and the schedule (and mmdet's class
# count); the backbone is the recipe's.
ADAPT = {
    'mmdet': '''
data_root = '{data}/coco/'
classes = {classes}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=(
        'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)
# The heads' classes are the data's (4 shapes, not COCO's 80).
model = dict(roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                           mask_head=dict(num_classes=len(classes))))
''',
    'mmseg': '''
data_root = '{data}/ade'
crop_size = (128, 128)
model = dict(data_preprocessor=dict(size=crop_size))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=3)
default_hooks = dict(checkpoint=dict(interval=2))
''',
    'mmpretrain': '''
data_root = '{data}/imagenet'
classes = {classes}
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=2)
# The base's cosine schedule begins after 20 warm-up epochs.
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        end=2)]
''',
}
# No evaluation inside train.py (val_interval is past the end): test.py
# evaluates the checkpoint.
COMMON = '''
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
'''
# 2 training iterations: 4 COCO / ADE images in batches of 2, 8 ImageNet
# images (2 per class) in batches of 4.
SPEC = DemoDataSpec(cls_train_per_class=2, cls_val_per_class=1, det_train=4,
                    det_val=2, seg_train=4, seg_val=2)


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('recipe_data')
    generate_demo_data(str(root), spec=SPEC)
    return root


@pytest.fixture(scope='module')
def import_blocker(tmp_path_factory):
    return write_import_blocker(str(tmp_path_factory.mktemp('blocker')))


def test_readme_has_the_three_recipes():
    recipes = readme_recipes()
    assert sorted(recipes) == sorted(FRAMEWORK_EXTRAS)
    for framework, text in recipes.items():
        assert "custom_imports = dict(imports=['dwnet_mm']" in text
        # Only the framework's own extra: no other framework named.
        others = set(FRAMEWORK_EXTRAS) - {framework}
        assert not any(f'{other}.' in text or f"'{other}::" in text
                       for other in others), text


def test_import_blocker(import_blocker):
    code = ('import mmengine\n'
            'try:\n'
            '    import mmdet.registry\n'
            'except ImportError as e:\n'
            '    print(type(e).__name__, e)\n')
    out = subprocess.run([sys.executable, '-c', code],
                         env=blocking_env(import_blocker, ['mmdet']),
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith('ModuleNotFoundError'), out


def _run(command, cwd, env, log_name, timeout=600):
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    with open(osp.join(cwd, log_name), 'w') as f:
        f.write(output)
    assert proc.returncode == 0, output[-6000:]
    return output, seconds


def _published(checkpoint):
    """The weights and meta of a training checkpoint, without its training
    state.

    mmengine 0.10.7 reads checkpoints with a plain ``torch.load``, which
    since torch 2.6 refuses the ``message_hub`` (``HistoryBuffer``, numpy)
    that its own Runner saves: a framework's ``test.py`` cannot read its
    ``train.py``'s checkpoint on this stack, whatever the model. Published
    models (``tools/model_converters/publish_model.py``) have no such state.
    """
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    published = checkpoint[:-len('.pth')] + '_published.pth'
    torch.save({'meta': state['meta'], 'state_dict': state['state_dict']},
               published)
    return published


@pytest.mark.parametrize('framework', ['mmpretrain', 'mmdet', 'mmseg'])
def test_recipe_trains_and_tests(framework, demo_data, import_blocker,
                                 tmp_path):
    recipe = readme_recipes()[framework]
    (tmp_path / 'recipe.py').write_text(recipe)
    (tmp_path / 'config.py').write_text(
        "_base_ = './recipe.py'\n" + ADAPT[framework].format(
            data=demo_data, classes=SHAPES) + COMMON)
    if 'dwnet_tiny_224.pth' in recipe:
        from dwnet_mm import DWNet
        torch.manual_seed(0)
        torch.save(DWNet(arch='tiny').state_dict(),
                   tmp_path / 'dwnet_tiny_224.pth')
    blocked = sorted(set(FRAMEWORK_EXTRAS) - {framework})
    env = blocking_env(import_blocker, blocked)
    work_dir = tmp_path / 'work'

    train, train_s = _run([
        sys.executable,
        framework_tool(framework, 'train.py'), 'config.py', '--work-dir',
        str(work_dir)
    ], tmp_path, env, 'train.log')
    # "Epoch(train) [1][2/2]" or "Iter(train) [2/2]": the 2nd iteration.
    assert re.search(r'\(train\)\s+(\[\d+\])?\[\s*2/2\]', train), \
        train[-3000:]
    if framework == 'mmdet':
        assert 'dwnet_tiny_224.pth' in train
    checkpoint = _published(
        (work_dir / 'last_checkpoint').read_text().strip())

    test, test_s = _run([
        sys.executable,
        framework_tool(framework, 'test.py'), 'config.py', checkpoint,
        '--work-dir',
        str(work_dir)
    ], tmp_path, env, 'test.log')
    line = [
        line for line in test.splitlines()
        if '(test)' in line and f'{METRICS[framework]}:' in line
    ]
    assert line, test[-3000:]
    print(f'\n{framework}: train {train_s:.0f} s, test {test_s:.0f} s '
          f'(blocked: {", ".join(blocked)})\n{line[-1].strip()}')

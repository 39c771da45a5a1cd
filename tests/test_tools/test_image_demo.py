"""tools/image_demo.py: one picture through each framework's inferencer.

The demo configs (small models) get checkpoints made from randomly
initialised models. The tool runs in this process (``main(argv)``); what
it prints is checked against the framework's inferencer run directly on
the same checkpoint, and its picture against the input.
"""
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image, ImageDraw

import dwnet_mm  # noqa: F401
from dwnet_mm.safe_loading import checkpoint_loading
from dwnet_mm.demo import SEG_CLASSES, SHAPES
from tools_helpers import REPO_ROOT, load_tool

CONFIGS = {
    'cls': 'configs/cls/demo_dwnet-nano_shapes.py',
    'det': 'configs/det/demo_cascade_dwnet-nano_shapes.py',
    'seg': 'configs/seg/demo_upernet_dwnet-nano_shapes.py',
}
SCOPES = {'cls': 'mmpretrain', 'det': 'mmdet', 'seg': 'mmseg'}
# The cls checkpoint carries no class names: they come from the config.
CLASSES = {'cls': None, 'det': SHAPES, 'seg': SEG_CLASSES}
SCORE_THR = 0.1  # random weights score low
SIZE = (96, 64)  # (width, height): not square, so that a swap shows


class Unpicklable:
    """Pickled by reference: the safe loader must refuse it."""


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    """Shapes on noise, as a PNG (lossless: a drawn copy must differ)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 200, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    draw.ellipse((8, 8, 40, 40), fill=(210, 40, 40))
    draw.rectangle((52, 18, 88, 54), fill=(40, 40, 210))
    path = tmp_path_factory.mktemp('image') / 'shapes.png'
    picture.save(path)
    return str(path)


def build_model(task):
    import importlib
    cfg = Config.fromfile(osp.join(REPO_ROOT, CONFIGS[task]))
    scope = SCOPES[task]
    importlib.import_module(f'{scope}.utils').register_all_modules(False)
    registry = importlib.import_module(f'{scope}.registry')
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """A checkpoint of a random model per task, as tools/train.py saves."""
    folder = tmp_path_factory.mktemp('checkpoints')
    paths = {}
    for seed, task in enumerate(CONFIGS):
        torch.manual_seed(seed)
        meta = {'seed': seed}
        if CLASSES[task]:
            meta['dataset_meta'] = {'classes': CLASSES[task]}
        paths[task] = str(folder / f'{task}.pth')
        torch.save({'state_dict': build_model(task).state_dict(),
                    'meta': meta}, paths[task])
    return paths


@pytest.fixture(scope='module')
def image_demo():
    return load_tool('tools/image_demo.py')


def run_demo(image_demo, capsys, argv):
    """The tool's printed lines and the drawn picture's path."""
    capsys.readouterr()
    image_demo.main(argv)
    lines = capsys.readouterr().out.splitlines()
    drawn = [line for line in lines if line.startswith('drawn prediction: ')]
    assert len(drawn) == 1, lines
    return lines, drawn[0][len('drawn prediction: '):]


def run_inferencer(task, checkpoint, image):
    """The framework's inferencer on its own: the reference."""
    config = osp.join(REPO_ROOT, CONFIGS[task])
    with checkpoint_loading():
        if task == 'cls':
            from mmpretrain.apis import ImageClassificationInferencer
            inferencer = ImageClassificationInferencer(
                config, pretrained=checkpoint, device='cpu')
            return inferencer(image)[0]
        if task == 'det':
            from mmdet.apis import DetInferencer
            inferencer = DetInferencer(config, checkpoint, device='cpu')
            return inferencer(image)['predictions'][0]
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(config, checkpoint, device='cpu')
        return inferencer(image)['predictions']


def listed(lines):
    """``  name: value ...`` lines as (name, value, rest)."""
    found = []
    for line in lines:
        match = re.match(r'^  (.+): ([0-9.]+)%? ?(.*)$', line)
        if match:
            found.append((match[1], float(match[2]), match[3]))
    return found


def expected_cls(prediction):
    scores = np.asarray(prediction['pred_scores'])
    return [(SHAPES[i], float(scores[i])) for i in np.argsort(-scores)[:5]]


def expected_det(prediction):
    scores = np.asarray(prediction['scores'])
    keep = [i for i in np.argsort(-scores) if scores[i] >= SCORE_THR]
    return len(keep), [(SHAPES[prediction['labels'][i]], float(scores[i]),
                        prediction['bboxes'][i]) for i in keep[:10]]


def expected_seg(prediction):
    counts = np.bincount(np.asarray(prediction).ravel(),
                         minlength=len(SEG_CLASSES))
    return {SEG_CLASSES[i]: 100.0 * c / counts.sum()
            for i, c in enumerate(counts) if c}


def check_picture(drawn, image):
    assert osp.isfile(drawn), drawn
    with Image.open(image) as original, Image.open(drawn) as picture:
        assert picture.size == original.size == SIZE
        difference = np.abs(
            np.asarray(picture.convert('RGB'), dtype=np.int16) -
            np.asarray(original.convert('RGB'), dtype=np.int16))
    # Something is drawn on it (labels, boxes, a coloured mask).
    assert (difference.max(-1) > 30).sum() > 50


def test_cls(image_demo, capsys, checkpoints, image, tmp_path):
    lines, drawn = run_demo(image_demo, capsys, [
        image, CONFIGS['cls'], checkpoints['cls'], '--out-dir',
        str(tmp_path), '--device', 'cpu'])
    check_picture(drawn, image)
    assert 'top-4 classes (of 4):' in lines
    printed = [(name, score) for name, score, _ in listed(lines)]
    expected = expected_cls(run_inferencer('cls', checkpoints['cls'], image))
    assert [name for name, _ in printed] == [name for name, _ in expected]
    np.testing.assert_allclose([s for _, s in printed],
                               [s for _, s in expected], atol=1e-4)


def test_det(image_demo, capsys, checkpoints, image, tmp_path):
    lines, drawn = run_demo(image_demo, capsys, [
        image, CONFIGS['det'], checkpoints['det'], '--out-dir',
        str(tmp_path), '--score-thr', str(SCORE_THR)])
    check_picture(drawn, image)
    count, best = expected_det(
        run_inferencer('det', checkpoints['det'], image))
    assert count > 0
    header = lines[lines.index(f'drawn prediction: {drawn}') + 1]
    assert header.startswith(f'{count} detections with score >= 0.1 ('), \
        header
    printed = listed(lines)
    assert [name for name, _, _ in printed] == [name for name, _, _ in best]
    np.testing.assert_allclose([s for _, s, _ in printed],
                               [s for _, s, _ in best], atol=1e-4)
    boxes = [[float(v) for v in rest.strip('[]').split(',')]
             for _, _, rest in printed]
    np.testing.assert_allclose(boxes, [b for _, _, b in best], atol=0.06)


def test_seg(image_demo, capsys, checkpoints, image, tmp_path):
    lines, drawn = run_demo(image_demo, capsys, [
        image, CONFIGS['seg'], checkpoints['seg'], '--out-dir',
        str(tmp_path)])
    check_picture(drawn, image)
    printed = {name: share for name, share, _ in listed(lines)}
    expected = expected_seg(run_inferencer('seg', checkpoints['seg'], image))
    assert printed.keys() == expected.keys()
    for name, share in expected.items():
        assert printed[name] == pytest.approx(share, abs=0.006)


def test_checkpoint_is_read_safely(image_demo, capsys, checkpoints, image,
                                   tmp_path, torch_load_calls):
    run_demo(image_demo, capsys, [
        image, CONFIGS['cls'], checkpoints['cls'], '--out-dir',
        str(tmp_path)])
    assert torch_load_calls and False not in torch_load_calls, \
        torch_load_calls


def exit_message(image_demo, argv):
    """The one-line message of the tool's SystemExit."""
    with pytest.raises(SystemExit) as info:
        image_demo.main(argv)
    message = info.value.code
    assert isinstance(message, str), message  # printed, exit status 1
    assert message.startswith('error: ') and '\n' not in message, message
    return message


def test_bad_input(image_demo, checkpoints, image, tmp_path):
    missing = str(tmp_path / 'missing.png')
    message = exit_message(image_demo, [missing, CONFIGS['cls']])
    assert missing in message and 'does not exist' in message
    not_image = tmp_path / 'notes.png'
    not_image.write_text('not a picture')
    message = exit_message(image_demo, [str(not_image), CONFIGS['cls']])
    assert 'cannot read image' in message
    message = exit_message(image_demo, [image, 'configs/cls/missing.py'])
    assert 'configs/cls/missing.py' in message and 'does not exist' in message
    message = exit_message(image_demo, [image, 'no-such-model'])
    assert 'neither a file nor a model name' in message
    message = exit_message(image_demo,
                           [image, CONFIGS['det'], str(tmp_path / 'x.pth')])
    assert 'x.pth' in message and 'leave it out' in message

    truncated = tmp_path / 'truncated.pth'  # an interrupted download
    with open(checkpoints['cls'], 'rb') as f:
        truncated.write_bytes(f.read(4096))
    message = exit_message(image_demo,
                           [image, CONFIGS['cls'], str(truncated)])
    assert 'cannot read checkpoint' in message and 'truncated.pth' in message

    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {}, 'meta': {'hook': Unpicklable()}}, unsafe)
    message = exit_message(image_demo, [image, CONFIGS['cls'], str(unsafe)])
    assert 'Unpicklable' in message and '--trust-checkpoint' in message


def test_framework_not_installed(image_demo, image, monkeypatch):
    # The demo det config inherits mmdet's bases through its own base.
    monkeypatch.setitem(sys.modules, 'mmdet', None)  # as if not installed
    message = exit_message(image_demo, [image, CONFIGS['det']])
    assert 'needs mmdet' in message and "pip install 'dwnet-mm[det]'" in \
        message, message

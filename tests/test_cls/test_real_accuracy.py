"""ImageNet-ReaL accuracy against hand-computed values."""
import json
import math

import pytest
import torch
from mmengine.evaluator import Evaluator
from mmpretrain.structures import DataSample

import dwnet_mm  # noqa: F401  (registers ImageNetReaLAccuracy)
from dwnet_mm.evaluation import ImageNetReaLAccuracy

NUM_CLASSES = 10
# Entry i belongs to ILSVRC2012_val_{i + 1:08d}.JPEG.
REAL = [[], [3], [1, 7], [5], [0, 2, 9], [8]]


@pytest.fixture
def real_file(tmp_path):
    path = tmp_path / 'real.json'
    path.write_text(json.dumps(REAL))
    return str(path)


def _sample(number, top1=None, label=None, folder='val/n01440764'):
    sample = DataSample(metainfo=dict(
        img_path=f'data/imagenet/{folder}/ILSVRC2012_val_{number:08d}.JPEG'))
    if top1 is not None:
        score = torch.full((NUM_CLASSES, ), 0.01)
        score[top1] = 0.9
        sample.set_pred_score(score)
    if label is not None:
        sample.set_pred_label(label)
    return sample


def _evaluate(real_file, samples, batch=2):
    evaluator = Evaluator(
        dict(type='ImageNetReaLAccuracy', real_labels_file=real_file))
    for i in range(0, len(samples), batch):
        evaluator.process(data_samples=samples[i:i + batch])
    return evaluator.evaluate(len(samples))


def test_hand_computed(real_file):
    samples = [
        _sample(2, top1=3),  # [3]: correct
        _sample(3, top1=7),  # [1, 7]: correct (second valid label)
        _sample(4, top1=4),  # [5]: wrong
        _sample(5, top1=2),  # [0, 2, 9]: correct
        _sample(1, top1=0),  # []: left out
        _sample(6, label=1),  # [8]: wrong, prediction as a label only
    ]
    metrics = _evaluate(real_file, samples)
    assert metrics == {'real/top1': pytest.approx(100 * 3 / 5)}


def test_order_and_subset_do_not_matter(real_file):
    samples = [_sample(5, top1=9), _sample(3, top1=3), _sample(4, top1=5)]
    # [0, 2, 9] correct, [1, 7] wrong, [5] correct.
    assert _evaluate(real_file, samples, batch=1) == {
        'real/top1': pytest.approx(200 / 3)
    }
    # Flat val/ folder (the official layout) maps the same way.
    flat = [_sample(5, top1=9, folder='val'), _sample(2, top1=0,
                                                      folder='val')]
    assert _evaluate(real_file, flat) == {'real/top1': pytest.approx(50.0)}


def test_works_in_mmpretrain_scope(real_file):
    from mmpretrain.registry import METRICS
    metric = METRICS.build(
        dict(type='ImageNetReaLAccuracy', real_labels_file=real_file,
             prefix='ReaL'))
    assert isinstance(metric, ImageNetReaLAccuracy)
    metric.process(None, [_sample(2, top1=3).to_dict()])
    assert metric.evaluate(1) == {'ReaL/top1': pytest.approx(100.0)}


def test_only_unlabelled_images_gives_nan(real_file):
    with pytest.warns(UserWarning, match='undefined'):
        metrics = _evaluate(real_file, [_sample(1, top1=0)])
    assert math.isnan(metrics['real/top1'])


def test_missing_labels_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='reassessed-imagenet'):
        ImageNetReaLAccuracy(real_labels_file=str(tmp_path / 'real.json'))


@pytest.mark.parametrize('content', ['{"a": 1}', '[[1, 2], 3]', '[["1"]]',
                                     'not json'])
def test_bad_labels_file(tmp_path, content):
    path = tmp_path / 'real.json'
    path.write_text(content)
    with pytest.raises(ValueError, match='real.json'):
        ImageNetReaLAccuracy(real_labels_file=str(path))


def test_unmappable_samples(real_file):
    metric = ImageNetReaLAccuracy(real_labels_file=real_file)
    other = DataSample(
        metainfo=dict(img_path='train/n01440764/n01440764_10026.JPEG'))
    other.set_pred_score(torch.ones(NUM_CLASSES))
    with pytest.raises(ValueError, match='ILSVRC2012_val_XXXXXXXX'):
        metric.process(None, [other.to_dict()])
    no_path = DataSample().set_pred_score(torch.ones(NUM_CLASSES))
    with pytest.raises(ValueError, match='img_path'):
        metric.process(None, [no_path.to_dict()])
    with pytest.raises(ValueError, match='has only 6 entries'):
        metric.process(None, [_sample(7, top1=0).to_dict()])

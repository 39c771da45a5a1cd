"""mmseg's IoUMetric (the configs' evaluator) against a hand computation."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.structures import SegDataSample


def _sample(pred, gt):
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
    sample.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
    return sample.to_dict()


def test_miou_matches_hand_computation():
    ignore = 255
    # Image 1: classes 0, 1, 2 and two ignored pixels (predicted 0 and 1,
    # which must not count).
    gt1 = [[0, 0, 1, 1],
           [0, 0, 1, 1],
           [2, 2, ignore, ignore],
           [2, 2, 2, 2]]
    pred1 = [[0, 1, 1, 1],
             [0, 0, 1, 2],
             [2, 0, 0, 1],
             [2, 2, 2, 2]]
    # Image 2: class 3 appears; class 4 appears nowhere (NaN, left out).
    gt2 = [[3, 3],
           [3, 0]]
    pred2 = [[3, 0],
             [3, 3]]
    metric = IoUMetric(iou_metrics=['mIoU'], ignore_index=ignore)
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'd', 'e'))
    metric.process({}, [_sample(pred1, gt1), _sample(pred2, gt2)])
    results = metric.evaluate(2)

    # Totals over both images (not a mean of per-image IoUs):
    # class: (intersection, union, ground-truth pixels)
    #   0: image 1 (3, 5, 4), image 2 (0, 2, 1) -> 3 / 7, acc 3 / 5
    #   1: image 1 (3, 5, 4)                    -> 3 / 5, acc 3 / 4
    #   2: image 1 (5, 7, 6)                    -> 5 / 7, acc 5 / 6
    #   3: image 2 (2, 4, 3)                    -> 2 / 4, acc 2 / 3
    iou = [3 / 7, 3 / 5, 5 / 7, 2 / 4]
    acc = [3 / 5, 3 / 4, 5 / 6, 2 / 3]
    correct, valid = 3 + 3 + 5 + 2, 14 + 4
    assert results['mIoU'] == pytest.approx(100 * sum(iou) / 4, abs=0.006)
    assert results['mAcc'] == pytest.approx(100 * sum(acc) / 4, abs=0.006)
    assert results['aAcc'] == pytest.approx(100 * correct / valid,
                                            abs=0.006)
    # The per-image mean would differ: the check can tell them apart.
    per_image = ((3 / 5 + 3 / 5 + 5 / 7) / 3 + (0 / 2 + 2 / 4) / 2) / 2
    assert abs(100 * per_image - results['mIoU']) > 1


def test_perfect_prediction_is_100():
    gt = [[0, 1], [2, 255]]
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=tuple(str(i) for i in range(150)))
    metric.process({}, [_sample(gt, gt)])
    assert metric.evaluate(1)['mIoU'] == 100.0

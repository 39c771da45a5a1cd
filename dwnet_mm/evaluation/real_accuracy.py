"""ImageNet-ReaL ("Are we done with ImageNet?", Beyer et al. 2020) accuracy.

The ReaL labels file (``real.json`` of the google-research/reassessed-imagenet
release) is a JSON list with one entry per ImageNet validation image, in
file-name order (ILSVRC2012_val_00000001 first). Each entry lists the class
indices that are correct for that image; an empty list marks an image that
the ReaL study dropped.
"""
import json
import os.path as osp
import re
import warnings

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

_VAL_NAME = re.compile(r'ILSVRC2012_val_(\d{8})')


def load_real_labels(real_labels_file):
    """Read and validate a ReaL labels file.

    Args:
        real_labels_file (str): Path of ``real.json``.

    Returns:
        list[frozenset[int]]: The valid classes of each validation image,
        indexed by (image number - 1).
    """
    if not osp.isfile(real_labels_file):
        raise FileNotFoundError(
            f'ImageNet-ReaL labels file {real_labels_file!r} does not exist; '
            'download real.json from the google-research/reassessed-imagenet '
            'release and pass its path as `real_labels_file`')
    with open(real_labels_file) as f:
        try:
            entries = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{real_labels_file!r} is not valid JSON ({e}); '
                             'expected the ReaL real.json file') from None
    if not isinstance(entries, list) or not all(
            isinstance(entry, list) and all(
                isinstance(c, int) and not isinstance(c, bool)
                for c in entry) for entry in entries):
        raise ValueError(
            f'{real_labels_file!r} is not in the ReaL format: expected a '
            'JSON list with one list of class indices per validation image, '
            'e.g. [[90], [795], [], ...]')
    return [frozenset(entry) for entry in entries]


def real_index_from_path(img_path):
    """0-based ReaL index of an ImageNet validation image, or None."""
    match = _VAL_NAME.search(osp.basename(str(img_path)))
    return int(match.group(1)) - 1 if match else None


@METRICS.register_module()
class ImageNetReaLAccuracy(BaseMetric):
    """Top-1 accuracy against the ImageNet-ReaL labels.

    A prediction is correct when its top-1 class is one of the image's ReaL
    labels; images without ReaL labels are left out. Samples are matched to
    the labels file by their image file name (``ILSVRC2012_val_XXXXXXXX``),
    so any subset or ordering of the validation set works, but the file
    names must be the original ones.

    Registered in mmengine's root ``METRICS``, so it works in mmpretrain
    configs, e.g. next to the usual accuracy::

        val_evaluator = [
            dict(type='Accuracy', topk=(1, 5)),
            dict(type='ImageNetReaLAccuracy',
                 real_labels_file='data/imagenet/real.json'),
        ]

    Args:
        real_labels_file (str): Path of the ReaL ``real.json``.
        collect_device (str): Device to gather results across ranks,
            'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names.
            Defaults to 'real', giving ``real/top1``.
    """
    default_prefix = 'real'

    def __init__(self, real_labels_file, collect_device='cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.real_labels_file = real_labels_file
        self.real_labels = load_real_labels(real_labels_file)

    def _real_index(self, data_sample):
        img_path = data_sample.get('img_path')
        if img_path is None:
            raise ValueError(
                'ImageNetReaLAccuracy needs the image path of each sample to '
                'find its ReaL labels, but the data sample has no '
                '"img_path"; keep "img_path" in the meta_keys of PackInputs')
        index = real_index_from_path(img_path)
        if index is None:
            raise ValueError(
                f'cannot map {img_path!r} to an ImageNet-ReaL entry: the '
                'file name must contain ILSVRC2012_val_XXXXXXXX (the '
                'original validation file names); ReaL labels only apply to '
                'the ImageNet-1K validation set')
        if index >= len(self.real_labels):
            raise ValueError(
                f'{img_path!r} is validation image {index + 1}, but '
                f'{self.real_labels_file!r} has only '
                f'{len(self.real_labels)} entries')
        return index

    @staticmethod
    def _top1(data_sample):
        score = data_sample.get('pred_score')
        if score is not None:
            return int(torch.as_tensor(score).argmax())
        label = data_sample.get('pred_label')
        if label is None:
            raise ValueError('data sample has neither "pred_score" nor '
                             '"pred_label"; is the model a classifier?')
        return int(torch.as_tensor(label).reshape(-1)[0])

    def process(self, data_batch, data_samples):
        """Store the ReaL index and top-1 class of each sample."""
        for data_sample in data_samples:
            self.results.append(
                (self._real_index(data_sample), self._top1(data_sample)))

    def compute_metrics(self, results):
        """Accuracy (%) over the samples that have ReaL labels."""
        correct = counted = 0
        for index, pred in results:
            labels = self.real_labels[index]
            if not labels:
                continue
            counted += 1
            correct += pred in labels
        if counted == 0:
            warnings.warn('no evaluated image has ImageNet-ReaL labels; '
                          'ReaL accuracy is undefined (nan)')
            return {'top1': float('nan')}
        return {'top1': 100.0 * correct / counted}

"""Fixtures of the classification tests: small generated ImageNet copies."""
import json

import pytest
import torch

from cls_data import make_imagenet


@pytest.fixture(scope='session')
def imagenet_folder(tmp_path_factory):
    """ImageNet class-folder layout and the ReaL labels of its val set."""
    root = tmp_path_factory.mktemp('imagenet_folder')
    val_images = make_imagenet(root)
    # ReaL: the first image has no valid label (dropped), the others list
    # their own label plus class 4.
    real = [[] if i == 0 else [label, 4]
            for i, (_, label) in enumerate(val_images)]
    (root / 'real.json').write_text(json.dumps(real))
    return root


@pytest.fixture(scope='session')
def imagenet_annfile(tmp_path_factory):
    """ImageNet with meta/{train,val}.txt annotation lists."""
    root = tmp_path_factory.mktemp('imagenet_annfile')
    make_imagenet(root, ann_file=True)
    return root


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread for these tests.

    Small CPU workloads run up to 100x slower with two OpenMP threads when
    the cores are busy with other processes (parallel test runs); one
    thread keeps them at milliseconds.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

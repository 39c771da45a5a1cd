import pytest
import torch

from det_test_utils import write_coco_fixture


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread for the det tests: their shrunken models' ops are
    too small to gain from more, and OpenMP workers that spin on shared
    cores slow them down many times."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def coco_fixture(tmp_path_factory):
    """(data_root, annotations): a small generated COCO-layout dataset."""
    root = tmp_path_factory.mktemp('coco')
    annotations = write_coco_fixture(str(root))
    return root, annotations

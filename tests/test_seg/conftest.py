import pytest
import torch

from seg_test_utils import write_ade20k_fixture


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on these tiny tensors more threads cost more in
    start-up and contention (shared CI machines) than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def ade20k_fixture(tmp_path_factory):
    """(data_root, labels): a small generated ADE20K-layout dataset."""
    root = tmp_path_factory.mktemp('ade20k')
    labels = write_ade20k_fixture(str(root))
    return root, labels

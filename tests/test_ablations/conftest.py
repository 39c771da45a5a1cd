"""Fixtures of the ablation tests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: these small CPU models run fastest with one
    thread when the cores are shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

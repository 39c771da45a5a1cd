"""Fixtures of the tools tests: a tiny ImageNet copy, a finished run."""
import pytest
import torch

from tools_helpers import (TINY_CONFIG, data_options, load_tool,
                           make_tiny_imagenet)


@pytest.fixture(scope='session')
def tiny_imagenet(tmp_path_factory):
    return make_tiny_imagenet(tmp_path_factory.mktemp('tiny_imagenet'))


@pytest.fixture
def one_thread():
    """One intra-op thread, as in the subprocesses (see tool_env)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def trained_work_dir(tmp_path_factory, tiny_imagenet):
    """An uninterrupted run of the tiny config: 3 epochs of 4 iterations.

    It is the reference of the preemption test and gives the other tests
    real checkpoints (``epoch_{1,2,3}.pth``).
    """
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        load_tool('tools/train.py').main([
            TINY_CONFIG, '--work-dir',
            str(work_dir), '--cfg-options', *data_options(tiny_imagenet)
        ])
    finally:
        torch.set_num_threads(threads)
    return work_dir

import os
import random

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

# Keep CPU runs predictable on small CI machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
    return REPO_ROOT


def _scope_snapshot():
    return dict(DefaultScope._instance_dict)


def _scope_restore(snapshot):
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(snapshot)


# DWNet's output defaults follow the current mmengine scope, and runners
# leave their scope behind as the process-wide "current" one; without this
# a test's result would depend on which test ran before it.
@pytest.fixture(autouse=True, scope='module')
def _isolate_default_scope_per_module():
    snapshot = _scope_snapshot()
    yield
    _scope_restore(snapshot)


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    snapshot = _scope_snapshot()
    yield
    _scope_restore(snapshot)


# Each test starts from the same random state, whichever xdist worker runs
# it and whatever ran before, so a failure replays with the test alone.
@pytest.fixture(autouse=True)
def _seed_random_generators():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def torch_load_calls(monkeypatch):
    """The ``weights_only`` argument of every ``torch.load`` call made while
    the test runs (None: not given, torch's default)."""
    calls = []
    torch_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return torch_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)
    return calls


@pytest.fixture(autouse=True)
def _restore_backend_switches():
    """A test that turns dwnet_mm's kernels off (``set_native(False)``,
    ``pytorch_ops()``) leaves them as they were for the next one."""
    from dwnet_mm.ops import set_native, set_triton, use_native, use_triton
    saved = use_native(), use_triton()
    yield
    set_native(saved[0]), set_triton(saved[1])


@pytest.fixture
def no_tf32():
    """Plain fp32 on CUDA: TF32 convs and matmuls differ by ~1e-3."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved

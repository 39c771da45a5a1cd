"""MicroBatchClipOptimWrapper against the authors' accumulation loop (their
main.py, fp32 branch), in float64."""
import contextlib

import pytest
import torch
from mmengine.optim import OptimWrapper

from dwnet_mm.engine import MicroBatchClipOptimWrapper

MAX_NORM = 5.0


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 5), torch.nn.ReLU(),
        torch.nn.Linear(5, 3)).double()


def _batches(n):
    generator = torch.Generator().manual_seed(1)
    # Large inputs: every gradient norm is far above MAX_NORM.
    return [(torch.randn(4, 6, generator=generator, dtype=torch.float64) * 30,
             torch.randn(4, 3, generator=generator, dtype=torch.float64))
            for _ in range(n)]


def _loss(model, batch):
    inputs, targets = batch
    return ((model(inputs) - targets)**2).mean()


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)


def authors_loop(batches, accumulation):
    """main.py's train_one_epoch with ACCUMULATION_STEPS > 1 (fp32)."""
    model = _model()
    optimizer = _adamw(model)
    optimizer.zero_grad()
    norms = []
    for idx, batch in enumerate(batches):
        loss = _loss(model, batch) / accumulation
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(
            model.parameters(), MAX_NORM)))
        if (idx + 1) % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
    return model, norms


def wrapper_loop(wrapper_type, batches, accumulation):
    model = _model()
    wrapper = wrapper_type(
        _adamw(model), accumulative_counts=accumulation,
        clip_grad=dict(max_norm=MAX_NORM))
    wrapper.initialize_count_status(model, 0, len(batches))
    for batch in batches:
        with wrapper.optim_context(model):
            loss = _loss(model, batch)
        wrapper.update_params(loss)
    return model


def _max_difference(a, b):
    return max((p - q).abs().max().item()
               for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize('accumulation', [1, 2, 3])
def test_equals_the_authors_loop(accumulation):
    batches = _batches(6)
    expected, norms = authors_loop(batches, accumulation)
    # Clipping is active, also in the middle of an accumulation.
    assert min(norms) > 2 * MAX_NORM
    ours = wrapper_loop(MicroBatchClipOptimWrapper, batches, accumulation)
    assert _max_difference(ours, expected) < 1e-12
    if accumulation > 1:
        # mmengine's OptimWrapper (one clip per update) is another update.
        plain = wrapper_loop(OptimWrapper, batches, accumulation)
        assert _max_difference(plain, expected) > 1e-4


class _DataParallelLike(torch.nn.Module):
    """Records whether the optim wrapper skips the all-reduce."""

    def __init__(self):
        super().__init__()
        self.module = _model()
        self.skipped = 0

    @contextlib.contextmanager
    def no_sync(self):
        self.skipped += 1
        yield


@pytest.mark.parametrize('wrapper_type, skipped', [
    (MicroBatchClipOptimWrapper, 0),
    (OptimWrapper, 2),  # the first micro-batch of each of the 2 updates
])
def test_all_reduces_every_micro_batch(wrapper_type, skipped):
    model = _DataParallelLike()
    wrapper = wrapper_type(_adamw(model.module), accumulative_counts=2)
    wrapper.initialize_count_status(model, 0, 4)
    for batch in _batches(4):
        with wrapper.optim_context(model):
            loss = _loss(model.module, batch)
        wrapper.update_params(loss)
    assert model.skipped == skipped

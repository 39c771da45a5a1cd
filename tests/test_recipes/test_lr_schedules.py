"""The lr of every iteration of each real config's run, as mmengine sets it,
against the authors' schedules written out here from their trainers.

mmengine's side: the Runner builds the optimizer wrapper, scales the lr
(``auto_scale_lr``) and builds the param schedulers from the config, as
``Runner.train`` does, for a fake loader of a given length and a given
number of processes; the schedulers are stepped as ``ParamSchedulerHook``
steps them (per-iteration ones after every iteration, per-epoch ones after
every epoch). One run goes through ``Runner.train`` itself.
"""
import math
import os.path as osp
import re

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import EpochBasedTrainLoop, Runner
from recipes import (CLS_224_CONFIGS, CLS_384_CONFIGS, DET_CONFIGS,
                     SEG_CONFIGS, cpu_optim_wrapper_cfg, load)
from torch.utils.data import DataLoader

REL_TOL = 1e-9


# The authors' schedules ------------------------------------------------------


def authors_imagenet_lrs(gpus, batch, accumulation, iters_per_epoch,
                         epochs=300, warmup_epochs=20, base_lr=5e-4,
                         warmup_lr=5e-7, min_lr=5e-6):
    """The lr of every micro-batch in the authors' Swin-style trainer.

    main.py scales base, warm-up and minimum lr by total batch / 512 (and by
    the accumulation steps); timm's CosineLRScheduler (t_initial = all
    iterations, warmup_t, warmup_prefix=False, t_in_epochs=False) starts at
    the warm-up lr and is set by step_update(epoch * iters + idx) after each
    optimizer step. Defaults: their config.py (per 512 images).
    """
    scale = batch * gpus / 512.0
    if accumulation > 1:
        scale *= accumulation
    peak, start, floor = base_lr * scale, warmup_lr * scale, min_lr * scale
    total = int(epochs * iters_per_epoch)
    warmup = int(warmup_epochs * iters_per_epoch)

    def timm_lr(t):
        if t < warmup:
            return start + t * ((peak - start) / warmup)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t /
                                                            total))

    lr, lrs = start, []
    for epoch in range(epochs):
        for idx in range(iters_per_epoch):
            lrs.append(lr)
            if (idx + 1) % accumulation == 0:
                lr = timm_lr(epoch * iters_per_epoch + idx)
    return lrs


def authors_coco_lrs(iters_per_epoch, epochs=36, lr=1e-4, steps=(27, 33),
                     warmup_iters=500, warmup_ratio=0.001):
    """mmcv 1.x 'step' policy with linear warm-up by iteration (the
    authors' mmdet 2.x config): the epoch's step lr, times
    1 - (1 - i / warmup_iters) * (1 - warmup_ratio) while i < warmup_iters.
    """
    lrs = []
    for epoch in range(epochs):
        regular = lr * 0.1**sum(epoch >= s for s in steps)
        for idx in range(iters_per_epoch):
            i = epoch * iters_per_epoch + idx
            factor = 1.
            if i < warmup_iters:
                factor = 1 - (1 - i / warmup_iters) * (1 - warmup_ratio)
            lrs.append(regular * factor)
    return lrs


def authors_ade_lrs(max_iters=160000, lr=6e-5, warmup_iters=1500,
                    warmup_ratio=1e-6):
    """mmcv 1.x 'poly' policy (power 1, min_lr 0) by iteration with linear
    warm-up (the authors' mmseg 0.x config)."""
    lrs = []
    for i in range(max_iters):
        regular = lr * (1 - i / max_iters)
        if i < warmup_iters:
            regular *= 1 - (1 - i / warmup_iters) * (1 - warmup_ratio)
        lrs.append(regular)
    return lrs


# mmengine's side -------------------------------------------------------------


class _LrRecorder(BaseModel):
    """Records the lr of each training iteration and updates through the
    optim wrapper (so accumulation counts as in training)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2, 2))
        self.lrs = []

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def train_step(self, data, optim_wrapper):
        self.lrs.append(optim_wrapper.get_lr()['lr'][0])
        optim_wrapper.update_params((self.weight * 0).sum())
        return {}


def _runner(cfg, iters_per_epoch, world_size, work_dir):
    # The fake loader has the config's batch size: Runner.scale_lr reads it.
    batch = cfg.train_dataloader.batch_size
    runner = Runner(
        model=_LrRecorder(),
        work_dir=str(work_dir),
        train_dataloader=DataLoader(
            list(range(iters_per_epoch * batch)), batch_size=batch),
        train_cfg=cfg.train_cfg,
        optim_wrapper=cpu_optim_wrapper_cfg(cfg),
        param_scheduler=cfg.param_scheduler,
        auto_scale_lr=cfg.get('auto_scale_lr'),
        default_hooks=dict(
            checkpoint=None, logger=None, timer=None, sampler_seed=None),
        default_scope=cfg.default_scope,
        cfg=cfg)
    # Runner.scale_lr reads the number of processes from here.
    runner._world_size = world_size
    return runner


def mmengine_lrs(cfg, iters_per_epoch, world_size, work_dir):
    """The lr of every iteration of the config's run."""
    runner = _runner(cfg, iters_per_epoch, world_size, work_dir)
    # As Runner.train: train loop, optim wrapper, lr scaling, schedulers.
    loop = runner.train_loop
    wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.optim_wrapper = wrapper
    runner.scale_lr(wrapper, runner.auto_scale_lr)
    schedulers = runner.build_param_scheduler(runner.param_schedulers)
    if isinstance(loop, EpochBasedTrainLoop):
        epochs, iters_per_epoch = loop.max_epochs, len(loop.dataloader)
    else:
        epochs, iters_per_epoch = 1, loop.max_iters
    per_iter = [s for s in schedulers if not s.by_epoch]
    per_epoch = [s for s in schedulers if s.by_epoch]
    group = wrapper.optimizer.param_groups[0]
    lrs = []
    for _ in range(epochs):
        for _ in range(iters_per_epoch):
            lrs.append(group['lr'])
            for scheduler in per_iter:
                scheduler.step()
        for scheduler in per_epoch:
            scheduler.step()
    return lrs


def assert_same_lrs(actual, expected):
    assert len(actual) == len(expected)
    worst = max(
        range(len(expected)),
        key=lambda i: abs(actual[i] - expected[i]) / expected[i])
    error = abs(actual[worst] - expected[worst]) / expected[worst]
    assert error <= REL_TOL, (
        f'iteration {worst}: lr {actual[worst]!r}, the authors\' '
        f'{expected[worst]!r} (relative difference {error:.3g})')


def _layout(name):
    """(GPUs, images per GPU and update) from an OpenMMLab config name."""
    gpus, batch = re.search(r'_(\d+)xb(\d+)_', osp.basename(name)).groups()
    return int(gpus), int(batch)


# ImageNet --------------------------------------------------------------------


def _accumulation(cfg):
    return cfg.optim_wrapper.get('accumulative_counts', 1)


@pytest.mark.parametrize('name', CLS_224_CONFIGS)
def test_imagenet_as_named(name, tmp_path):
    """Each config at its own layout (8 x 128; 8 x 64 x 2 accumulation;
    16 x 64), a fake epoch of 4 iterations (the schedule is in epochs)."""
    cfg = load(name)
    gpus, _ = _layout(name)
    batch, accumulation = cfg.train_dataloader.batch_size, _accumulation(cfg)
    expected = authors_imagenet_lrs(gpus, batch, accumulation, 4)
    assert_same_lrs(mmengine_lrs(cfg, 4, gpus, tmp_path), expected)


@pytest.mark.parametrize('name', CLS_384_CONFIGS)
def test_imagenet_384_fine_tune(name, tmp_path):
    """The same trainer at the paper's fine-tuning lr 1e-5 (per 1024) and
    Swin's fine-tuning warm-up / minimum ratios (5 of 30 epochs, x 1e-3,
    x 1e-2)."""
    cfg = load(name)
    gpus, _ = _layout(name)
    batch, accumulation = cfg.train_dataloader.batch_size, _accumulation(cfg)
    expected = authors_imagenet_lrs(
        gpus, batch, accumulation, 4, epochs=30, warmup_epochs=5,
        base_lr=5e-6, warmup_lr=5e-9, min_lr=5e-8)
    assert_same_lrs(mmengine_lrs(cfg, 4, gpus, tmp_path), expected)


@pytest.mark.parametrize('gpus, batch, accumulation', [
    (4, 128, 1),  # 512 images per update
    (3, 40, 1),  # 120
    (16, 64, 2),  # 2048
    (8, 32, 4),  # 1024 again, BN over 32
])
def test_imagenet_other_total_batch(gpus, batch, accumulation, tmp_path):
    """Peak, warm-up start and minimum lr all scale with the images per
    update, with no command-line option."""
    cfg = load('cls/i-dynamic-dwnet-tiny_8xb128_in1k.py')
    cfg.train_dataloader.batch_size = batch
    cfg.optim_wrapper.accumulative_counts = accumulation
    cfg.auto_scale_lr.base_batch_size = 1024 // accumulation
    expected = authors_imagenet_lrs(gpus, batch, accumulation, 8)
    assert_same_lrs(mmengine_lrs(cfg, 8, gpus, tmp_path), expected)


def test_imagenet_real_epoch_length(tmp_path):
    """DWNet-T's run at its real length: 1,281,167 images over 8 x 128 with
    the last incomplete batch dropped, 1251 iterations per epoch."""
    cfg = load('cls/dwnet-tiny_8xb128_in1k.py')
    assert cfg.train_dataloader.drop_last
    iters = math.ceil(1281167 / 8) // 128
    expected = authors_imagenet_lrs(8, 128, 1, iters)
    assert_same_lrs(mmengine_lrs(cfg, iters, 8, tmp_path), expected)


def test_imagenet_through_runner_train(tmp_path):
    """Runner.train itself (its hooks, the accumulating optim wrapper):
    I-Dynamic-T's 8 x 64 x 2 at 4 iterations per epoch."""
    cfg = load('cls/i-dynamic-dwnet-tiny_8xb128_in1k.py')
    runner = _runner(cfg, 4, 8, tmp_path)
    runner.train()
    expected = authors_imagenet_lrs(8, 64, 2, 4)
    assert_same_lrs(runner.model.lrs, expected)
    # The optimizer stepped once per 2 micro-batches.
    optimizer = runner.optim_wrapper.optimizer
    assert optimizer.state[runner.model.weight]['step'] == 300 * 4 // 2


def test_old_imagenet_schedule_differs(tmp_path):
    """The check can fail: mmpretrain's per-epoch cosine over epochs 20-300
    (the configs' previous schedule) is far from the authors'."""
    cfg = load('cls/dwnet-tiny_8xb128_in1k.py')
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20,
             convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True,
             begin=20)
    ]
    with pytest.raises(AssertionError, match='relative difference'):
        assert_same_lrs(mmengine_lrs(cfg, 4, 8, tmp_path),
                        authors_imagenet_lrs(8, 128, 1, 4))


# COCO and ADE20K -------------------------------------------------------------


@pytest.mark.parametrize('configs', [DET_CONFIGS, SEG_CONFIGS],
                         ids=['coco', 'ade20k'])
def test_configs_share_one_schedule(configs):
    first = load(configs[0])
    for name in configs[1:]:
        cfg = load(name)
        assert (cfg.param_scheduler, cfg.train_cfg, cfg.optim_wrapper.
                optimizer.lr) == (first.param_scheduler, first.train_cfg,
                                  first.optim_wrapper.optimizer.lr), name


def test_coco(tmp_path):
    """40 iterations per epoch: the 500 warm-up iterations span 12.5
    epochs (the schedule is in iterations and epochs)."""
    cfg = load(DET_CONFIGS[0])
    assert_same_lrs(mmengine_lrs(cfg, 40, 8, tmp_path), authors_coco_lrs(40))


def test_ade20k(tmp_path):
    cfg = load(SEG_CONFIGS[0])
    assert_same_lrs(mmengine_lrs(cfg, 1, 8, tmp_path), authors_ade_lrs())


# The scheduler's own checks --------------------------------------------------


def _optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=1e-3)


@pytest.mark.parametrize('kwargs, message', [
    (dict(warmup=20, end=300, by_epoch=True), 'convert_to_iter_based'),
    (dict(warmup=20), 'end'),
    (dict(warmup=300, end=300), 'warmup'),
])
def test_warmup_cosine_refuses(kwargs, message):
    from dwnet_mm.engine import WarmupCosineLR
    with pytest.raises(ValueError, match=message):
        WarmupCosineLR(_optimizer(), **kwargs)

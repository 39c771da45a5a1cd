"""tools/dist_train.sh on a machine without GPU: two real DDP processes
on the gloo backend, with the config's SyncBN replaced by BN."""
import glob
import os.path as osp
import re

import pytest
import torch

from tools_helpers import (TINY_CONFIG, checkpoint, data_options, free_port,
                           run_tool)


@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='on GPU hosts dist_train.sh starts one process per GPU (NCCL)')
def test_two_cpu_processes_through_dist_train_sh(tiny_imagenet, tmp_path):
    work_dir = tmp_path / 'ddp'
    result = run_tool(
        [
            'dist_train.sh',
            TINY_CONFIG,
            '2',
            '--work-dir',
            str(work_dir),
            '--cfg-options',
            *data_options(tiny_imagenet),
            'train_cfg.max_epochs=1',
            'train_cfg.val_interval=1',
            # DEBUG makes mmengine write one log file per rank.
            'log_level=DEBUG'
        ],
        PORT=str(free_port()))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert 'no GPU visible: 2 CPU processes on the gloo backend' in \
        result.stderr

    assert osp.isfile(work_dir / 'epoch_1.pth')
    state = checkpoint(work_dir / 'epoch_1.pth')['state_dict']
    # Plain BN buffers, saved without DDP's "module." prefix; rank 0's BN
    # saw 2 batches (4 on one process).
    tracked = state['backbone.stages.0.blocks.0.norm.num_batches_tracked']
    assert int(tracked) == 2

    logs = {}
    for path in glob.glob(str(work_dir / '*' / '*_rank*.log')):
        rank = int(re.search(r'_rank(\d+)\.log$', path).group(1))
        with open(path) as f:
            logs[rank] = f.read()
    assert sorted(logs) == [0, 1], 'one log per rank'
    for rank, log in logs.items():
        assert 'Distributed training: True' in log, rank
        assert 'GPU number: 2' in log, rank  # mmengine's world size
        assert "dist_cfg: {'backend': 'gloo'}" in log, rank
        assert "type='CPUDistributedDataParallel'" in log, rank
        # The config's SyncBN became BN in the run's config.
        assert "norm_cfg=dict(type='SyncBN')" not in log, rank
        assert "norm_cfg=dict(type='BN')" in log, rank
        # 8 images in batches of 2 on 2 ranks: 2 iterations each.
        assert 'Epoch(train) [1][2/2]' in log, rank
        assert 'Epoch(train) [1][3/' not in log, rank
    # Each rank trained on its own half of the data.
    losses = [
        re.findall(r'Epoch\(train\) \[1\]\[1/2\].*loss: ([0-9.]+)',
                   logs[rank])[0] for rank in (0, 1)
    ]
    assert losses[0] != losses[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only hosts')
def test_prepare_train_config_for_cpu_processes(tmp_path):
    from dwnet_mm.runner_setup import load_config, prepare_train_config

    single = prepare_train_config(load_config(TINY_CONFIG), str(tmp_path))
    assert single.model.backbone.norm_cfg.type == 'SyncBN'  # mmengine reverts
    assert single.env_cfg.dist_cfg.backend == 'nccl'
    assert single.get('model_wrapper_cfg') is None

    cfg = prepare_train_config(load_config(TINY_CONFIG),
                               str(tmp_path),
                               launcher='pytorch')
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='CPUDistributedDataParallel',
                                         broadcast_buffers=False,
                                         find_unused_parameters=False)

    # A config's own DDP options are kept.
    cfg = load_config(
        TINY_CONFIG,
        dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                    find_unused_parameters=True)))
    cfg = prepare_train_config(cfg, str(tmp_path), launcher='slurm')
    assert cfg.model_wrapper_cfg == dict(type='CPUDistributedDataParallel',
                                         find_unused_parameters=True)

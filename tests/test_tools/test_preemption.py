"""A run killed by SIGKILL and restarted with --resume ends as if never
stopped: same weights, iteration, learning rate and optimizer state.

The tiny config trains with mmengine's EpochBasedTrainLoop, as the
classification and detection configs do, saving a checkpoint after every
epoch. The kill lands in the middle of epoch 2; ``--resume`` continues from
``epoch_1.pth`` and trains epoch 2 again from its first batch (an
EpochBasedTrainLoop restarts an interrupted epoch; the iterations done
after the last checkpoint are lost, none are skipped or repeated in the
result). An IterBasedTrainLoop (the segmentation configs) instead skips the
batches its checkpoint has already seen; the tiny config's variant
``dwnet_tiny_cls_iter.py`` checks that path, killed between two iteration
checkpoints.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tools_helpers import (REPO_ROOT, TINY_CONFIG, TOOLS_DATA, checkpoint,
                           data_options, load_tool, tool_env)

ITER_CONFIG = osp.join(TOOLS_DATA, 'dwnet_tiny_cls_iter.py')


def wait_for(path, process, output, timeout=240):
    """Wait until ``path`` exists; fail early if the run ended first."""
    deadline = time.monotonic() + timeout
    while not osp.exists(path):
        if process.poll() is not None:
            with open(output) as f:
                log = f.read()
            pytest.fail(f'the run ended (exit {process.returncode}) before '
                        f'it reached the kill point:\n{log[-3000:]}')
        if time.monotonic() > deadline:
            pytest.fail(f'{path} did not appear in {timeout} s')
        time.sleep(0.1)


def train_until_killed(config, work_dir, options, at_iter):
    """Start tools/train.py, SIGKILL it before iteration ``at_iter``."""
    ready_file = str(work_dir) + '.waiting'
    # The config plus the hook that holds the run at the kill point.
    held_config = str(work_dir) + '_held.py'
    with open(held_config, 'w') as f:
        f.write(f"""_base_ = [{config!r}]
custom_imports = dict(imports=['dwnet_mm', 'preemption_hook'])
custom_hooks = [
    dict(type='WaitForKillHook', at_iter={at_iter},
         ready_file={ready_file!r})
]
""")
    command = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'), held_config, '--work-dir',
        str(work_dir), '--cfg-options', *options
    ]
    output = str(work_dir) + '.out'  # a file: a full pipe would block
    with open(output, 'w') as out:
        process = subprocess.Popen(command,
                                   cwd=REPO_ROOT,
                                   env=tool_env(),
                                   stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for(ready_file, process, output)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    with open(ready_file) as f:
        epoch, iteration, batch_idx = map(int, f.read().split())
    return epoch, iteration, batch_idx


def resume(config, work_dir, options):
    """Restart tools/train.py with --resume; returns the run's log.

    The restart runs in this process: nothing of the killed process
    survives but its files, and the kill itself needed the subprocess.
    """
    before = set(os.listdir(work_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run (tool_env)
    try:
        load_tool('tools/train.py').main([
            config, '--work-dir',
            str(work_dir), '--resume', '--cfg-options', *options
        ])
    finally:
        torch.set_num_threads(threads)
    (run_dir, ) = [
        name for name in set(os.listdir(work_dir)) - before
        if osp.isdir(work_dir / name)
    ]
    with open(work_dir / run_dir / f'{run_dir}.log') as f:
        return f.read()


def assert_same_training_state(resumed_path, reference_path):
    resumed, reference = checkpoint(resumed_path), checkpoint(reference_path)
    # Weights and buffers (BN running statistics, num_batches_tracked).
    assert resumed['state_dict'].keys() == reference['state_dict'].keys()
    for name, tensor in reference['state_dict'].items():
        assert torch.equal(resumed['state_dict'][name], tensor), name
    # Position in the schedule.
    for key in ('epoch', 'iter'):
        assert resumed['meta'][key] == reference['meta'][key], key
    for key in ('epoch', 'iter', 'max_iters'):
        assert resumed['message_hub']['runtime_info'][key] == \
            reference['message_hub']['runtime_info'][key], key
    # Learning rate: optimizer groups and scheduler states.
    assert [g['lr'] for g in resumed['optimizer']['param_groups']] == \
        [g['lr'] for g in reference['optimizer']['param_groups']]
    assert resumed['param_schedulers'] == reference['param_schedulers']
    # AdamW moments and step counts of every parameter.
    assert resumed['optimizer']['state'].keys() == \
        reference['optimizer']['state'].keys()
    for index, state in reference['optimizer']['state'].items():
        for key, value in state.items():
            assert torch.equal(resumed['optimizer']['state'][index][key],
                               value), (index, key)
    # The per-iteration loss and lr history, kept across the restart.
    for key in ('train/loss', 'train/lr'):
        got = resumed['message_hub']['log_scalars'][key].data[0]
        want = reference['message_hub']['log_scalars'][key].data[0]
        np.testing.assert_array_equal(got, want, err_msg=key)
    return resumed


def test_sigkill_mid_epoch_then_resume(trained_work_dir, tiny_imagenet,
                                       tmp_path):
    work_dir = tmp_path / 'preempted'
    options = data_options(tiny_imagenet)
    # 4 iterations per epoch; epoch_1.pth is written after iteration 4.
    epoch, iteration, batch_idx = train_until_killed(TINY_CONFIG,
                                                     work_dir,
                                                     options,
                                                     at_iter=6)
    assert (epoch, iteration, batch_idx) == (1, 6, 2)  # mid epoch 2
    assert sorted(p for p in os.listdir(work_dir) if p.endswith('.pth')) \
        == ['epoch_1.pth']

    log = resume(TINY_CONFIG, work_dir, options)
    assert 'resumed epoch: 1, iter: 4' in log
    # Epoch 2 restarts at its first batch.
    assert 'Epoch(train) [2][1/4]' in log
    assert 'Epoch(train) [1]' not in log

    resumed = assert_same_training_state(work_dir / 'epoch_3.pth',
                                         trained_work_dir / 'epoch_3.pth')
    assert resumed['meta']['iter'] == 12


@pytest.fixture(scope='module')
def uninterrupted_iter_run(tmp_path_factory, tiny_imagenet):
    work_dir = tmp_path_factory.mktemp('uninterrupted_iter')
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        load_tool('tools/train.py').main([
            ITER_CONFIG, '--work-dir',
            str(work_dir), '--cfg-options', *data_options(tiny_imagenet)
        ])
    finally:
        torch.set_num_threads(threads)
    return work_dir


def test_sigkill_between_iteration_checkpoints_then_resume(
        uninterrupted_iter_run, tiny_imagenet, tmp_path):
    work_dir = tmp_path / 'preempted_iter'
    options = data_options(tiny_imagenet)
    # Checkpoints every 5 iterations; kill after 7.
    _, iteration, _ = train_until_killed(ITER_CONFIG,
                                         work_dir,
                                         options,
                                         at_iter=7)
    assert iteration == 7
    assert sorted(p for p in os.listdir(work_dir) if p.endswith('.pth')) \
        == ['iter_5.pth']

    log = resume(ITER_CONFIG, work_dir, options)
    assert 'resumed epoch: 0, iter: 5' in log  # no epochs here
    # The 5 batches iter_5.pth has seen are skipped, not trained again.
    assert 'Advance dataloader 5 steps' in log
    assert 'Iter(train) [ 6/12]' in log
    assert 'Iter(train) [ 5/12]' not in log

    resumed = assert_same_training_state(
        work_dir / 'iter_12.pth', uninterrupted_iter_run / 'iter_12.pth')
    assert resumed['meta']['iter'] == 12

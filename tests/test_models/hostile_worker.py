"""Runs checkpoint reads in forked children under memory and time caps.

Started once by tests/test_models/test_hostile_checkpoints.py: it imports
torch, mmengine and dwnet_mm once, then reads one JSON case per stdin line
(``path``, ``entry``, ``seconds``) and forks a child per case, so that each
case runs in its own process (a crash or a leak stays there) without paying
for the imports again. The child sets ``RLIMIT_AS`` to what it has mapped
plus ``MEMORY_HEADROOM``, reads the file through the entry point, checks
numpy's string casts, and reports through a pipe; the parent kills it at
the time limit and answers one JSON line per case: how it ended (exit code
or signal, or timeout), seconds, peak RSS, and the child's report.
"""
import json
import os
import resource
import signal
import sys
import time

import numpy as np
import torch

MEMORY_HEADROOM = 2 << 30
SMALL = dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1])


def numpy_intact():
    return np.array([3.25]).astype(str).tolist() == ['3.25'] and \
        np.array([b'ab']).astype('U').tolist() == ['ab']


def entry_points():
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader

    from dwnet_mm.safe_loading import checkpoint_loading, safe_load
    from dwnet_mm.models import DWNet
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..',
                                    'tools', 'model_converters'))
    from publish_model import publish

    def mmengine_load_checkpoint(path):
        with checkpoint_loading():
            load_checkpoint(torch.nn.Linear(2, 2), path)

    def mmengine_checkpoint_loader(path):
        with checkpoint_loading():
            CheckpointLoader.load_checkpoint(path)

    def pretrained_init_cfg(path):
        DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                        checkpoint=path)).init_weights()

    def publish_model(path):
        publish(path, path + '.published.pth')

    def full_pickle(path):  # the harness's own check: this one does harm
        torch.load(path, weights_only=False)

    return dict(safe_load=safe_load,
                mmengine_load_checkpoint=mmengine_load_checkpoint,
                mmengine_checkpoint_loader=mmengine_checkpoint_loader,
                pretrained_init_cfg=pretrained_init_cfg,
                publish_model=publish_model, full_pickle=full_pickle)


def mapped_bytes():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) * 1024
    return 0


def child(case, entries, report):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    cap = mapped_bytes() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    torch.set_num_threads(1)
    result = dict(error=None, message='')
    try:
        entries[case['entry']](case['path'])
    except BaseException as e:  # the harm checks decide, not the class
        result.update(error=type(e).__name__, message=str(e)[:4000])
    result['numpy_intact'] = numpy_intact()
    os.write(report, json.dumps(result).encode())
    os._exit(0)


def run(case, entries):
    read, write = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        child(case, entries, write)
    os.close(write)
    outcome = dict(timeout=False)
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > case['seconds']:
            os.kill(pid, signal.SIGKILL)
            done, status, usage = os.wait4(pid, 0)
            outcome['timeout'] = True
            break
        time.sleep(0.005)
    data = b''
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.close(read)
    outcome.update(
        seconds=time.monotonic() - start,
        signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        peak_rss=usage.ru_maxrss * 1024,
        report=json.loads(data) if data else None)
    return outcome


def main():
    entries = entry_points()
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line), entries)), flush=True)


if __name__ == '__main__':
    main()

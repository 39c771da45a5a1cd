"""Helpers of the tools tests: a tiny ImageNet copy, tool runners.

The tools run the way users run them: ``tools/*.sh`` and ``tools/*.py`` as
subprocesses where the process boundary matters (several processes, a
kill, the exit status and stderr), and the scripts' ``main(argv)`` in this
process where only the outcome matters, which saves the import time of a
new interpreter on small CI machines.
"""
import importlib.util
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS_DATA = osp.join(REPO_ROOT, 'tests', 'data', 'tools')
TINY_CONFIG = osp.join(TOOLS_DATA, 'dwnet_tiny_cls.py')
CLASSES = ('n01440764', 'n01443537')  # as in the tiny config


def make_tiny_imagenet(root, train_per_class=4, val_per_class=2, size=32):
    """ImageNet folder layout: ``{train,val}/<wnid>/<wnid>_<i>.JPEG``."""
    seed = 0
    for split, count in (('train', train_per_class), ('val', val_per_class)):
        for wnid in CLASSES:
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                rng = np.random.default_rng(seed)
                seed += 1
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f'{wnid}_{i}.JPEG',
                                             format='JPEG')
    return root


def data_options(root):
    """``--cfg-options`` pointing the tiny config's loaders at ``root``."""
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def load_tool(relative_path):
    """Import a script under tools/ as a module."""
    name = '_tool_' + relative_path.replace('/', '_').replace('.', '_')
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO_ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_env(**extra):
    """Environment of the tool subprocesses."""
    env = dict(os.environ)
    paths = [REPO_ROOT, TOOLS_DATA]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        PYTHON=sys.executable,
        PYTHONUNBUFFERED='1',
        # One thread per process: the runs are tiny, the CI cores busy,
        # and results must not depend on the thread count.
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1')
    env.update(extra)
    return env


def run_tool(args, timeout=240, **env):
    """Run ``tools/<args[0]>`` to its end; returns the CompletedProcess."""
    script = osp.join(REPO_ROOT, 'tools', args[0])
    command = [script, *args[1:]] if script.endswith('.sh') else \
        [sys.executable, script, *args[1:]]
    return subprocess.run(command,
                          cwd=REPO_ROOT,
                          env=tool_env(**env),
                          capture_output=True,
                          text=True,
                          timeout=timeout)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def checkpoint(path):
    return torch.load(path, map_location='cpu', weights_only=False)

"""The backend switches: read once from ``DWNET_MM_NATIVE`` and
``DWNET_MM_TRITON`` (``0``: off), changed with ``set_native`` and
``set_triton`` (timm's ``set_fused_attn`` pattern); each turns off its own
kernels only. Triton is reported present and ``TRITON_INTERPRET=1`` makes
CPU tensors qualify, so no GPU is needed."""
import subprocess
import sys

import pytest
import torch

import dwnet_mm.ops.backend as backend_module
from dwnet_mm.ops import (backend_for, native_ops, pytorch_ops, set_native,
                          set_triton, use_native, use_triton)


@pytest.fixture
def triton_here(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.setattr(backend_module, '_triton_available', lambda: True)


def cpu_tensor():
    return torch.zeros(1, 4, 3, 8)


def test_native_switch_leaves_triton_on(triton_here):
    set_native(False)
    assert not use_native() and native_ops() is None and use_triton()
    assert backend_for(cpu_tensor()) == 'torch'
    assert backend_for(cpu_tensor(), triton=True) == 'triton'


def test_triton_switch_leaves_native_on(triton_here):
    set_triton(False)
    assert not use_triton() and use_native()
    assert backend_for(cpu_tensor(), triton=True) == \
        ('native' if native_ops() is not None else 'torch')


def test_pytorch_ops_restores_the_switches(triton_here):
    set_triton(False)
    with pytorch_ops():
        assert not use_native() and not use_triton()
        assert backend_for(cpu_tensor(), triton=True) == 'torch'
    assert use_native() and not use_triton()


def test_setting_the_environment_later_changes_nothing(monkeypatch):
    monkeypatch.setenv('DWNET_MM_NATIVE', '0')
    assert use_native()


ENVIRONMENT_VALUES = [('0', False), (' 0\n', False), ('1', True), ('', True),
                      ('yes', True)]


def test_environment_read_at_import():
    """Each value, as the module reads it when imported (one process; the
    module is executed again for each value, as an import would)."""
    code = (
        'import importlib, os, sys\n'
        'import dwnet_mm.ops.backend as b\n'
        'for value in sys.argv[1:]:\n'
        '    os.environ["DWNET_MM_NATIVE"] = value\n'
        '    os.environ["DWNET_MM_TRITON"] = value\n'
        '    b = importlib.reload(b)\n'
        '    print(b.use_native(), b.use_triton())\n')
    values = [value for value, _ in ENVIRONMENT_VALUES]
    out = subprocess.run([sys.executable, '-c', code, *values], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert out == [f'{enabled} {enabled}' for _, enabled in ENVIRONMENT_VALUES]

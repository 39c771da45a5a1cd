"""``DWNET_MM_NATIVE=0`` turns off the native CPU kernels only,
``DWNET_MM_TRITON=0`` the Triton GPU kernel only (no Triton or GPU needed:
the predicates are asked with Triton reported present and
``TRITON_INTERPRET=1``, under which CPU tensors qualify)."""
import importlib

import pytest
import torch

from dwnet_mm.ops import native_disabled, native_ops, triton_disabled
from dwnet_mm.ops.native import DISABLE_ENV
from dwnet_mm.ops.triton_i_dynamic_conv import (TRITON_DISABLE_ENV,
                                                triton_i_dynamic_supported)

# By path: dwnet_mm.ops' function of the same name hides the module.
triton_module = importlib.import_module('dwnet_mm.ops.triton_i_dynamic_conv')


@pytest.fixture
def switches(monkeypatch):
    """Both switches unset, Triton present and interpreting CPU tensors;
    returns ``set(name, value)``."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.delenv(TRITON_DISABLE_ENV, raising=False)
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.setattr(triton_module, 'triton_available', lambda: True)
    return monkeypatch.setenv


def test_switch_names():
    assert (DISABLE_ENV, TRITON_DISABLE_ENV) == ('DWNET_MM_NATIVE',
                                                 'DWNET_MM_TRITON')


def test_both_backends_on_by_default(switches):
    assert not native_disabled() and not triton_disabled()
    assert triton_i_dynamic_supported(torch.zeros(1, 4, 3, 3))


def test_native_switch_leaves_triton_on(switches):
    switches(DISABLE_ENV, '0')
    assert native_disabled() and native_ops() is None
    assert not triton_disabled()
    assert triton_i_dynamic_supported(torch.zeros(1, 4, 3, 3))


def test_triton_switch_leaves_native_on(switches):
    switches(TRITON_DISABLE_ENV, '0')
    assert triton_disabled() and not native_disabled()
    assert not triton_i_dynamic_supported(torch.zeros(1, 4, 3, 3))


@pytest.mark.parametrize('value', ['1', '', 'yes', ' 1 '])
def test_only_zero_switches_off(switches, value):
    switches(DISABLE_ENV, value)
    switches(TRITON_DISABLE_ENV, value)
    assert not native_disabled() and not triton_disabled()


def test_zero_with_spaces_switches_off(switches):
    switches(DISABLE_ENV, ' 0 ')
    switches(TRITON_DISABLE_ENV, '0\n')
    assert native_disabled() and triton_disabled()

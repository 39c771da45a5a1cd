"""Checked stand-ins for the few non-torch types real checkpoints pickle.

:func:`~.safe_load.safe_load` hands torch's ``weights_only`` unpickler these
in place of the real names (``torch.serialization.safe_globals`` with
``(stand_in, 'module.Name')`` aliases), so the file's arguments and states
reach only this code, never numpy's or mmengine's constructors:

* numeric numpy data (mmengine's ``message_hub``): ``_reconstruct`` takes
  only ``(ndarray, (0,), b'b')``; a dtype must be numeric (no object,
  string, void or structured dtypes) with exactly numpy's own state; a
  scalar is one bytes argument of the dtype's size; array data is exactly
  ``prod(shape) * itemsize`` bytes;
* mmengine's ``HistoryBuffer``: its three data attributes, and ``getattr``
  only for its statistics methods (older files pickle them);
* the authors' yacs ``CfgNode`` (their training config): a plain
  ``OrderedDict``.

:func:`standard_object` turns them into the real objects once the file is
read.
"""
import math
from collections import OrderedDict

import numpy as np

_NUMERIC = 'biufc'
_STATISTICS = ('min', 'max', 'current', 'mean')


class Refused(ValueError):
    """The file's arguments or state for a stand-in are not what the real
    type writes (re-raised by the loader with the file's name)."""


class Damaged(Refused):
    """The file is damaged or not a checkpoint (trusting it cannot help)."""


def _check(condition, what):
    if not condition:
        raise Refused(what)


class StandIn:
    """Base of the stand-ins: ``value`` is the real object, once built."""
    #: The attributes of a pickled yacs CfgNode (dropped when read).
    CFG_NODE_STATE = frozenset({'__immutable__', '__deprecated_keys__',
                                '__renamed_keys__', '__new_allowed__'})
    value = None


class DtypeStandIn(StandIn):
    """``numpy.dtype(name, align, copy)`` and its BUILD state."""

    def __init__(self, name=None, *flags):
        _check(type(name) is str and len(flags) <= 2
               and all(type(f) is bool for f in flags),
               'a numpy dtype with unexpected arguments')
        try:
            self.base = np.dtype(name)
        except TypeError:
            raise Refused('an unknown numpy dtype') from None
        _check(self.base.kind in _NUMERIC and self.base.fields is None and
               self.base.subdtype is None, 'a non-numeric numpy dtype')

    def __setstate__(self, state):
        _check(isinstance(state, tuple) and len(state) > 1 and
               state[1] in ('<', '>', '|', '='), 'a numpy dtype state')
        dtype = self.base.newbyteorder(state[1])
        _check(dtype.__reduce__()[2] == state,
               'a numpy dtype state other than numpy\'s own')
        self.value = dtype


def _dtype(stand_in):
    _check(type(stand_in) is DtypeStandIn and stand_in.value is not None,
           'numpy data without a checked dtype')
    return stand_in.value


def scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar(dtype, data)``."""
    dtype = _dtype(dtype)
    _check(type(data) is bytes and len(data) == dtype.itemsize,
           'a numpy scalar whose data is not one value of its dtype')
    return np.frombuffer(data, dtype)[0]


class NdarrayStandIn(StandIn):
    """An empty array from ``_reconstruct``, filled by its BUILD state."""

    def __setstate__(self, state):
        _check(isinstance(state, tuple) and len(state) == 5,
               'a numpy array state')
        version, shape, dtype, fortran, data = state
        _check(version == 1 and type(shape) is tuple and len(shape) <= 32 and
               all(type(n) is int and n >= 0 for n in shape) and
               type(fortran) is bool and type(data) is bytes,
               'a numpy array state')
        dtype = _dtype(dtype)
        _check(len(data) == math.prod(shape) * dtype.itemsize,
               'numpy array data whose size does not match its shape')
        self.value = np.frombuffer(data, dtype).reshape(
            shape, order='F' if fortran else 'C').copy()


def reconstruct(subtype, shape, typecode):
    """``numpy.core.multiarray._reconstruct``: only what ndarray pickles."""
    _check(subtype is NdarrayStandIn and shape == (0, ) and type(shape) is
           tuple and typecode == b'b', 'numpy _reconstruct arguments')
    return NdarrayStandIn()


class HistoryBufferStandIn(StandIn):
    """mmengine's ``HistoryBuffer``: data attributes only."""
    KEYS = frozenset({'max_length', '_log_history', '_count_history'})

    def __setstate__(self, state):
        _check(type(state) is dict and set(state) - {'statistics_methods'}
               == self.KEYS, 'HistoryBuffer state with unexpected keys')
        methods = state.get('statistics_methods', {})
        _check(type(methods) is dict and all(
            type(m) is StatisticsMethod for m in methods.values()),
            'HistoryBuffer statistics methods other than mmengine\'s')
        _check(type(state.get('max_length', 0)) is int,
               'a HistoryBuffer max_length that is not an int')
        self.state = {k: v for k, v in state.items() if k in self.KEYS}


class StatisticsMethod(str):
    """The name of a HistoryBuffer statistics method (``getattr`` result)."""


def checked_getattr(obj, name, *default):
    """``getattr(HistoryBuffer, 'mean')`` and the other statistics only."""
    _check(obj is HistoryBufferStandIn and name in _STATISTICS and
           not default, 'getattr other than HistoryBuffer statistics')
    return StatisticsMethod(name)


class CfgNodeStandIn(StandIn):
    """The authors' yacs ``CfgNode``: read as a plain ``OrderedDict``."""

    def __new__(cls, *args):
        _check(not args, 'CfgNode arguments')
        return OrderedDict()


STAND_INS = tuple(
    [(reconstruct, f'{m}._reconstruct') for m in (
        'numpy.core.multiarray', 'numpy._core.multiarray')] +
    [(scalar, f'{m}.scalar') for m in (
        'numpy.core.multiarray', 'numpy._core.multiarray')] +
    [(NdarrayStandIn, 'numpy.ndarray'), (DtypeStandIn, 'numpy.dtype'),
     (HistoryBufferStandIn, 'mmengine.logging.history_buffer.HistoryBuffer'),
     (checked_getattr, 'builtins.getattr'),
     (CfgNodeStandIn, 'yacs.config.CfgNode')])


def standard_object(obj, walk):
    """The real object for a stand-in (or a numpy number), else Refused.

    Args:
        obj: An object the unpickler returned that is no plain container.
        walk (callable): Checks and converts the objects ``obj`` holds.
    """
    if isinstance(obj, np.generic) and obj.dtype.kind in _NUMERIC:
        return obj
    if type(obj) in (NdarrayStandIn, DtypeStandIn):
        _check(obj.value is not None, 'an unfinished numpy object')
        return obj.value
    if type(obj) is HistoryBufferStandIn:
        from mmengine.logging import HistoryBuffer
        _check(hasattr(obj, 'state'), 'an unfinished HistoryBuffer')
        state = {k: walk(v) for k, v in obj.state.items()}
        _check(all(type(state[k]) is np.ndarray
                   for k in ('_log_history', '_count_history')),
               'HistoryBuffer histories that are not numpy arrays')
        buffer = HistoryBuffer.__new__(HistoryBuffer)
        vars(buffer).update(state)
        buffer._set_default_statistics()
        return buffer
    raise Refused(f'an object of type {ascii(type(obj).__qualname__)}')

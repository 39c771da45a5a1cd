"""Read checkpoints without letting them run code.

A ``.pth`` file is a pickle, and unpickling can call any function the file
names. :func:`safe_load` is the one function through which dwnet_mm reads
checkpoints (the ``Pretrained`` init_cfg, the converters, ``tools/test.py``,
``--resume``, ``load_from``, deploy loading):

1. ``torch.load(weights_only=True)``: torch's own safe unpickler, with
   nothing added to its allow-list.
2. If that refuses the file, :class:`RestrictedUnpickler`, passed to
   ``torch.load`` as its whole pickle module (its ``Unpickler`` *and* its
   ``load``, so the legacy format's header pickles go through it too). It
   never imports anything and resolves names only from a fixed table:

   * tensors and storages: torch's tensor rebuild functions (arguments
     checked), storage types, dtypes, ``torch.Size``, ``torch.device`` and
     the other constants torch's safe loader allows;
   * plain containers: ``OrderedDict``, ``Counter``, ``set``, ``frozenset``,
     ``bytearray``, ``complex`` and ``_codecs.encode`` (latin-1 only);
   * the known harmless classes of the authors' files
     (:data:`KNOWN_HARMLESS_CLASSES`: their yacs ``CfgNode`` config), made
     into inert :class:`PickledObject` dicts: no code of theirs is imported
     or run;
   * what mmengine's own checkpoints hold (``message_hub``): its
     ``HistoryBuffer`` (state checked, its class-level registry untouched),
     numpy arrays, dtypes and scalars, and ``getattr`` only for the
     ``HistoryBuffer`` statistics methods.

   Everything else (another global, the INST/OBJ/EXT opcodes, a persistent
   id that is not a storage, BUILD on anything but the types above) raises
   :class:`UnsafeCheckpointError`, naming the ``module.name`` and the fix.
3. Only with ``trust=True`` (``trust_checkpoint=True`` in the init_cfg,
   ``--trust-checkpoint`` in the tools), and only after 1 and 2 refused the
   file, full pickle: ``torch.load(weights_only=False)``, which runs any
   code the file contains.

Nothing here touches torch's process-wide safe-globals list.
:func:`checkpoint_loading` routes mmengine's checkpoint reads (local files,
``http(s)://``, ``open-mmlab://`` ...) through :func:`safe_load` while it is
active; the tools wrap their Runner in it.
"""
import codecs
import collections
import contextlib
import functools
import io
import os
import os.path as osp
import pickle
import struct
import sys
import tarfile
import threading
import types
import warnings

import torch

__all__ = [
    'KNOWN_HARMLESS_CLASSES', 'PickledObject', 'RestrictedUnpickler',
    'UnsafeCheckpointError', 'checkpoint_loading', 'restricted_pickle',
    'plain_containers', 'safe_load'
]

#: Classes the authors' files pickle besides tensors and containers
#: (REFERENCE section 5: their ``save_checkpoint`` stores the training
#: config, a yacs ``CfgNode``; ``optimizer``, ``lr_scheduler`` and apex
#: ``amp`` states are plain dicts, ``max_accuracy``/``epoch`` plain numbers).
#: They are read as inert :class:`PickledObject` dicts, never imported.
KNOWN_HARMLESS_CLASSES = ('yacs.config.CfgNode', )

_FIX = ('If you trust this file (you made it, or it comes from a source you '
        'trust), load it with trust_checkpoint=True in the Pretrained '
        'init_cfg, --trust-checkpoint in the dwnet_mm tools, or '
        'safe_load(..., trust=True); that unpickles it with full pickle, '
        'which runs whatever code the file contains.')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asks for something the safe loader does not allow.

    Attributes:
        refused (str): What was refused, e.g. ``'builtins.exec'``.
        filename (str | None): The checkpoint.
    """

    def __init__(self, refused, reason='is not allowed', filename=None):
        self.refused = refused
        self.reason = reason
        self.filename = filename
        where = f'{filename}: ' if filename else ''
        message = (f'{where}refused to load the checkpoint: it pickles '
                   f'{refused}, which {reason}; the safe checkpoint loader '
                   'only reads tensors, plain containers and a few known '
                   f'harmless classes. {_FIX}')
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.refused, self.reason, self.filename))


def _refuse(refused, reason='is not allowed'):
    raise UnsafeCheckpointError(refused, reason)


class PickledObject(dict):
    """Inert stand-in for an object of a known harmless class.

    It is a plain dict holding the pickled items (a yacs ``CfgNode`` is a
    dict); ``pickled_class`` names the original class and ``pickled_state``
    holds the state the file gave it (its ``__dict__``), as data.
    """
    pickled_class = None

    def __repr__(self):
        return f'{type(self).__name__}({dict.__repr__(self)})'


@functools.lru_cache(maxsize=None)
def _placeholder(full_name):
    name = full_name.rsplit('.', 1)[-1]
    return type(name, (PickledObject, ), {
        '__module__': __name__,
        'pickled_class': full_name,
        '__doc__': f'Inert stand-in for a pickled {full_name}.'
    })


def plain_containers(obj):
    """``obj`` with every :class:`PickledObject` in it made a plain dict.

    Use it before ``torch.save``-ing a loaded checkpoint, so that the new
    file holds no dwnet_mm class. Containers without one are returned as
    they are (a state dict keeps its ``_metadata``).
    """
    if isinstance(obj, PickledObject):
        return {k: plain_containers(v) for k, v in obj.items()}
    if type(obj) in (dict, collections.OrderedDict):
        items = [(k, plain_containers(v)) for k, v in obj.items()]
        if all(new is obj[k] for k, new in items):
            return obj
        copy = type(obj)(items)
        if type(obj) is collections.OrderedDict:
            vars(copy).update(vars(obj))
        return copy
    if type(obj) in (list, tuple):
        values = [plain_containers(v) for v in obj]
        if all(new is old for new, old in zip(values, obj)):
            return obj
        return type(obj)(values)
    return obj


# ---------------------------------------------------------------------------
# The allow-list: names -> objects, and which of them may be called.
# ---------------------------------------------------------------------------


def _is_int(x):
    return type(x) is int


def _is_int_tuple(x):
    return type(x) in (tuple, torch.Size) and all(_is_int(v) for v in x)


def _check_hooks(hooks, fn):
    if hooks is not None and (not isinstance(hooks, dict) or hooks):
        _refuse(f'backward hooks in {fn}',
                'would be called on backward; checkpoints carry none')


def _check_storage(storage, fn):
    if not isinstance(storage, (torch.storage.TypedStorage,
                                torch.storage.UntypedStorage)):
        _refuse(f'{fn} of a {type(storage).__module__}.'
                f'{type(storage).__qualname__}', 'is not a tensor storage')


def _check_tensor_args(storage, storage_offset, size, stride, fn):
    _check_storage(storage, fn)
    if not (_is_int(storage_offset) and _is_int_tuple(size)
            and _is_int_tuple(stride)):
        _refuse(f'{fn} with malformed arguments', 'is not a plain tensor')


def _check_obj_state(state, fn):
    """State set on a Parameter: plain attribute names only."""
    if state is None:
        return
    parts = state if isinstance(state, tuple) else (state, )
    if len(parts) > 2:
        _refuse(f'{fn} with malformed state', 'is not a plain tensor')
    for part in parts:
        if part is None:
            continue
        if not isinstance(part, dict) or not all(
                type(k) is str and not k.startswith('__') for k in part):
            _refuse(f'{fn} setting special attributes',
                    'could change how the object behaves')


def _tensor_rebuilders():
    utils = torch._utils

    def rebuild_tensor(storage, storage_offset, size, stride):
        _check_tensor_args(storage, storage_offset, size, stride,
                           'torch._utils._rebuild_tensor')
        return utils._rebuild_tensor(storage, storage_offset, size, stride)

    def rebuild_tensor_v2(storage, storage_offset, size, stride,
                          requires_grad, backward_hooks, metadata=None):
        fn = 'torch._utils._rebuild_tensor_v2'
        _check_tensor_args(storage, storage_offset, size, stride, fn)
        _check_hooks(backward_hooks, fn)
        if metadata is not None and not isinstance(metadata, dict):
            _refuse(f'{fn} with malformed metadata', 'is not a plain tensor')
        return utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
                                        bool(requires_grad),
                                        collections.OrderedDict(), metadata)

    def rebuild_tensor_v3(storage, storage_offset, size, stride,
                          requires_grad, backward_hooks, dtype, metadata=None):
        fn = 'torch._utils._rebuild_tensor_v3'
        _check_tensor_args(storage, storage_offset, size, stride, fn)
        _check_hooks(backward_hooks, fn)
        if not isinstance(dtype, torch.dtype) or (
                metadata is not None and not isinstance(metadata, dict)):
            _refuse(f'{fn} with malformed arguments', 'is not a plain tensor')
        return utils._rebuild_tensor_v3(storage, storage_offset, size, stride,
                                        bool(requires_grad),
                                        collections.OrderedDict(), dtype,
                                        metadata)

    def rebuild_parameter(data, requires_grad, backward_hooks):
        fn = 'torch._utils._rebuild_parameter'
        if not isinstance(data, torch.Tensor):
            _refuse(f'{fn} of a non-tensor', 'is not a plain parameter')
        _check_hooks(backward_hooks, fn)
        return utils._rebuild_parameter(data, bool(requires_grad),
                                        collections.OrderedDict())

    def rebuild_parameter_with_state(data, requires_grad, backward_hooks,
                                     state):
        fn = 'torch._utils._rebuild_parameter_with_state'
        if not isinstance(data, torch.Tensor):
            _refuse(f'{fn} of a non-tensor', 'is not a plain parameter')
        _check_hooks(backward_hooks, fn)
        _check_obj_state(state, fn)
        return utils._rebuild_parameter_with_state(data, bool(requires_grad),
                                                   collections.OrderedDict(),
                                                   state)

    rebuilders = {
        'torch._utils._rebuild_tensor': rebuild_tensor,
        'torch._utils._rebuild_tensor_v2': rebuild_tensor_v2,
        'torch._utils._rebuild_parameter': rebuild_parameter,
        'torch._utils._rebuild_parameter_with_state':
        rebuild_parameter_with_state,
    }
    if hasattr(utils, '_rebuild_tensor_v3'):
        rebuilders['torch._utils._rebuild_tensor_v3'] = rebuild_tensor_v3
    tensor_functions = tuple(rebuilders.values())

    def rebuild_from_type_v2(func, new_type, args, state):
        # torch's version calls ``func(*args)`` for any ``func``: with a
        # getattr gadget that is any function at all. Only the tensor
        # rebuild functions above, and only plain tensor types.
        fn = 'torch._tensor._rebuild_from_type_v2'
        if not any(func is f for f in tensor_functions):
            _refuse(f'{fn} calling {_describe(func)}',
                    'is not a tensor rebuild function')
        if new_type is not torch.Tensor and \
                new_type is not torch.nn.Parameter:
            _refuse(f'{fn} to {_describe(new_type)}',
                    'is not a plain tensor type')
        if not isinstance(args, tuple):
            _refuse(f'{fn} with malformed arguments', 'is not a plain tensor')
        _check_obj_state(state, fn)
        return torch._tensor._rebuild_from_type_v2(func, new_type, args,
                                                   state)

    rebuilders['torch._tensor._rebuild_from_type_v2'] = rebuild_from_type_v2
    return rebuilders


def _latin1_encode(obj, encoding='utf-8', errors='strict'):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes."""
    if type(obj) is not str or encoding not in ('latin1', 'latin-1') or \
            errors != 'strict':
        _refuse(f'_codecs.encode(..., {encoding!r})',
                'is not the latin-1 encoding pickle uses for bytes')
    return codecs.encode(obj, 'latin1')


def _bytearray(*args):
    if args == () or (len(args) == 1 and type(args[0]) in (bytes, list)) or (
            len(args) == 2 and type(args[0]) is str
            and args[1] in ('latin1', 'latin-1')):
        return bytearray(*args)
    _refuse('builtins.bytearray with these arguments',
            'is not how pickle stores a bytearray')


def _collection(kind):

    def build(*args):
        if len(args) > 1 or (args and type(args[0]) not in (
                list, tuple, dict, set, frozenset, collections.OrderedDict)):
            _refuse(f'{kind.__module__}.{kind.__qualname__} of '
                    f'{_describe(args[0]) if args else "several arguments"}',
                    'is not how pickle stores it')
        return kind(*args)

    build.__name__ = build.__qualname__ = kind.__name__
    return build


def _complex(*args):
    if len(args) > 2 or not all(type(a) in (int, float) for a in args):
        _refuse('builtins.complex with these arguments',
                'is not how pickle stores a complex number')
    return complex(*args)


def _torch_size(*args):
    if len(args) != 1 or not _is_int_tuple(tuple(args[0])) or \
            type(args[0]) not in (tuple, list):
        _refuse('torch.Size with these arguments', 'is not a plain shape')
    return torch.Size(args[0])


def _torch_device(*args):
    if not 1 <= len(args) <= 2 or type(args[0]) is not str or (
            len(args) == 2 and not _is_int(args[1])):
        _refuse('torch.device with these arguments', 'is not a plain device')
    return torch.device(*args)


def _get_layout(name):
    if type(name) is not str:
        _refuse('torch.serialization._get_layout of a non-string',
                'is not a plain layout')
    return torch.serialization._get_layout(name)


class _Numpy:
    """numpy arrays, dtypes and scalars (mmengine's ``message_hub``)."""

    def __init__(self):
        import numpy as np
        self.np = np
        try:
            from numpy._core.multiarray import scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import scalar
        self._scalar = scalar

    def reconstruct(self, subtype, shape, typecode):
        np = self.np
        if subtype is not np.ndarray or not _is_int_tuple(shape) or \
                type(typecode) is not bytes:
            _refuse('numpy.core.multiarray._reconstruct with these arguments',
                    'is not a plain numpy array')
        return np.ndarray.__new__(np.ndarray, shape, typecode)

    def dtype(self, *args):
        if not 1 <= len(args) <= 3 or type(args[0]) is not str or not all(
                type(a) is bool for a in args[1:]):
            _refuse('numpy.dtype with these arguments',
                    'is not a plain numpy dtype')
        return self.np.dtype(*args)

    def scalar(self, dtype, *data):
        np = self.np
        if not isinstance(dtype, np.dtype) or len(data) > 1 or (
                data and dtype.hasobject and not _plain_data(data[0])) or (
                    data and not dtype.hasobject
                    and type(data[0]) is not bytes):
            _refuse('numpy.core.multiarray.scalar with these arguments',
                    'is not a plain numpy scalar')
        return self._scalar(dtype, *data)


def _plain_data(obj):
    return obj is None or type(obj) in (bool, int, float, str, bytes)


class _MmengineTypes:
    """What mmengine's resume checkpoints pickle besides tensors."""
    STATE_KEYS = {'max_length', '_log_history', '_count_history'}

    def __init__(self):
        from mmengine.logging import HistoryBuffer
        self.history_buffer = HistoryBuffer

    def methods(self):
        cls = self.history_buffer
        registered = dict(cls._statistics_methods)
        for name in ('min', 'max', 'current', 'mean'):
            registered.setdefault(name, getattr(cls, name))
        return registered

    def getattr(self, obj, name, *default):
        # Protocol 2 pickles ``HistoryBuffer.mean`` as
        # ``getattr(HistoryBuffer, 'mean')``; nothing else is looked up.
        if obj is not self.history_buffer or type(name) is not str or \
                default or name not in self.methods():
            _refuse(f'builtins.getattr({_describe(obj)}, {name!r})',
                    'is not a HistoryBuffer statistics method')
        return self.methods()[name]

    def build(self, inst, state):
        np = _numpy().np
        if not isinstance(state, dict) or not set(state) <= (
                self.STATE_KEYS | {'statistics_methods'}):
            _refuse('mmengine HistoryBuffer state with unexpected keys',
                    'is not what mmengine saves')
        state = dict(state)
        methods = state.pop('statistics_methods', {})
        known = self.methods()
        if not isinstance(methods, dict) or not all(
                known.get(k) is v for k, v in methods.items()):
            _refuse('mmengine HistoryBuffer statistics methods other than '
                    'its registered ones', 'would be called when logging')
        if 'max_length' in state and not _is_int(state['max_length']):
            _refuse('mmengine HistoryBuffer max_length of '
                    f'{_describe(state["max_length"])}', 'is not an int')
        for key in ('_log_history', '_count_history'):
            if key in state and type(state[key]) is not np.ndarray:
                _refuse(f'mmengine HistoryBuffer {key} of '
                        f'{_describe(state[key])}', 'is not a numpy array')
        # Plain data only; the class-level registry gets mmengine's own
        # defaults (as its __setstate__ does), nothing from the file.
        vars(inst).update(state)
        if hasattr(inst, '_set_default_statistics'):
            inst._set_default_statistics()


@functools.lru_cache(maxsize=None)
def _numpy():
    return _Numpy()


@functools.lru_cache(maxsize=None)
def _mmengine():
    return _MmengineTypes()


class _Tables:
    """Name -> object, plus what REDUCE and NEWOBJ may call."""

    def __init__(self):
        self.globals = {}
        self.callables = {}  # id -> object (objects kept alive in globals)
        self.new_classes = {}
        self.placeholders = {}

        def allow(name, obj, call=False, new=False):
            self.globals[name] = obj
            if call:
                self.callables[id(obj)] = obj
            if new:
                self.new_classes[id(obj)] = obj

        # Plain containers and numbers (torch's safe loader allows these).
        allow('collections.OrderedDict',
              _collection(collections.OrderedDict), call=True)
        allow('collections.Counter', _collection(collections.Counter),
              call=True)
        allow('builtins.set', _collection(set), call=True)
        allow('builtins.frozenset', _collection(frozenset), call=True)
        allow('builtins.bytearray', _bytearray, call=True)
        allow('builtins.complex', _complex, call=True)
        allow('_codecs.encode', _latin1_encode, call=True)
        # Tensors: rebuild functions (checked) and constants.
        for name, fn in _tensor_rebuilders().items():
            allow(name, fn, call=True)
        allow('torch.Size', _torch_size, call=True)
        allow('torch.device', _torch_device, call=True)
        allow('torch.serialization._get_layout', _get_layout, call=True)
        allow('torch.Tensor', torch.Tensor)
        allow('torch._tensor.Tensor', torch.Tensor)
        allow('torch.nn.parameter.Parameter', torch.nn.Parameter)
        for value in vars(torch).values():
            if isinstance(value, (torch.dtype, torch.layout,
                                  torch.memory_format, torch.qscheme)):
                allow(str(value), value)
        allow('torch.UntypedStorage', torch.UntypedStorage)
        allow('torch.storage.UntypedStorage', torch.UntypedStorage)
        # The authors' training config and friends: inert dicts.
        for full_name in KNOWN_HARMLESS_CLASSES:
            cls = _placeholder(full_name)
            self.placeholders[id(cls)] = cls
            allow(full_name, cls)
            self.new_classes[id(cls)] = cls
        # mmengine's own checkpoints (message_hub).
        try:
            np = _numpy()
        except ImportError:
            np = None
        if np is not None:
            for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
                allow(f'{module}._reconstruct', np.reconstruct, call=True)
                allow(f'{module}.scalar', np.scalar, call=True)
            allow('numpy.ndarray', np.np.ndarray)
            allow('numpy.dtype', np.dtype, call=True)
        try:
            mm = _mmengine()
        except ImportError:
            mm = None
        if mm is not None:
            allow('mmengine.logging.history_buffer.HistoryBuffer',
                  mm.history_buffer)
            self.new_classes[id(mm.history_buffer)] = mm.history_buffer
            allow('builtins.getattr', mm.getattr, call=True)

    def storage_type(self, module, name):
        """Legacy typed storage classes (``torch.FloatStorage``...)."""
        if not module.startswith('torch') or not name.endswith('Storage'):
            return None
        if name == 'UntypedStorage':
            return torch.UntypedStorage
        try:
            return torch.serialization.StorageType(name)
        except (KeyError, AttributeError):
            return None


@functools.lru_cache(maxsize=None)
def _tables():
    return _Tables()


def _describe(obj):
    if isinstance(obj, type) or callable(obj):
        module = getattr(obj, '__module__', None) or type(obj).__module__
        name = getattr(obj, '__qualname__', None) or type(obj).__qualname__
        return f'{module}.{name}'
    return f'a {type(obj).__module__}.{type(obj).__qualname__}'


# ---------------------------------------------------------------------------
# The unpickler.
# ---------------------------------------------------------------------------


class _Stop(Exception):

    def __init__(self, value):
        self.value = value


def _op(code):
    return code[0]


class RestrictedUnpickler:
    """A pickle reader that only builds data (see the module docstring).

    The interface is that of :class:`pickle.Unpickler` as ``torch.load``
    uses it: ``Unpickler(file, encoding=...)``, ``find_class``,
    ``persistent_load`` (set by torch to read storages) and ``load()``.
    """

    def __init__(self, file, *, encoding='ASCII', errors='strict',
                 fix_imports=True):
        self._read = file.read
        self._readline = file.readline
        self.encoding = encoding
        self.errors = errors
        self.fix_imports = fix_imports
        self.memo = {}
        self.proto = 0

    # -- hooks torch overrides ----------------------------------------------
    def find_class(self, module, name):
        """Resolve a global from the fixed table; never imports."""
        if type(module) is not str or type(name) is not str:
            _refuse('a global with a non-string name', 'is malformed')
        if self.proto < 3 and self.fix_imports:
            import _compat_pickle
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        tables = _tables()
        full_name = f'{module}.{name}'
        if full_name in tables.globals:
            return tables.globals[full_name]
        storage_type = tables.storage_type(module, name)
        if storage_type is not None:
            return storage_type
        _refuse(f'`{full_name}`',
                'is not a tensor, storage, plain container or known '
                'harmless class')

    def persistent_load(self, pid):
        _refuse('a persistent id', 'is not a storage of this checkpoint')

    # -- the loop ------------------------------------------------------------
    def load(self):
        self.stack = []
        self.metastack = []
        read = self._read
        dispatch = self._dispatch
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError('checkpoint pickle ended early')
                handler = dispatch.get(key[0])
                if handler is None:
                    self._refuse_opcode(key[0])
                handler(self)
        except _Stop as stop:
            return stop.value
        except (IndexError, KeyError, struct.error) as e:
            raise pickle.UnpicklingError(
                f'malformed checkpoint pickle ({type(e).__name__}: {e})'
            ) from None

    def _refuse_opcode(self, code):
        names = {
            pickle.INST[0]: 'INST',
            pickle.OBJ[0]: 'OBJ',
            pickle.EXT1[0]: 'EXT1',
            pickle.EXT2[0]: 'EXT2',
            pickle.EXT4[0]: 'EXT4',
        }
        names.update({
            getattr(pickle, n)[0]: n
            for n in ('NEXT_BUFFER', 'READONLY_BUFFER') if hasattr(pickle, n)
        })
        if code == pickle.INST[0]:
            module = self._readline()[:-1].decode('utf-8', 'replace')
            name = self._readline()[:-1].decode('utf-8', 'replace')
            _refuse(f'`{module}.{name}` through the INST opcode',
                    'instantiates a class or calls a function')
        if code in names:
            _refuse(f'the {names[code]} opcode',
                    'instantiates classes or reads objects from outside '
                    'the file')
        _refuse(f'an unknown pickle opcode {bytes([code])!r}',
                'is not supported')

    # helpers
    def _pop_mark(self):
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _push(self, value):
        self.stack.append(value)

    def _decode_str(self, data):
        if self.encoding == 'bytes':
            return data
        return data.decode(self.encoding, self.errors)

    # -- data opcodes --------------------------------------------------------
    def _proto(self):
        proto = self._read(1)[0]
        if proto > pickle.HIGHEST_PROTOCOL:
            raise pickle.UnpicklingError(f'unsupported pickle protocol '
                                         f'{proto}')
        self.proto = proto

    def _frame(self):
        self._read(8)

    def _stop(self):
        raise _Stop(self.stack.pop())

    def _mark(self):
        self.metastack.append(self.stack)
        self.stack = []

    def _pop(self):
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def _pop_mark_op(self):
        self._pop_mark()

    def _dup(self):
        self._push(self.stack[-1])

    def _none(self):
        self._push(None)

    def _true(self):
        self._push(True)

    def _false(self):
        self._push(False)

    def _int(self):
        data = self._readline()
        if data == b'00\n':
            self._push(False)
        elif data == b'01\n':
            self._push(True)
        else:
            self._push(int(data, 0))

    def _binint(self):
        self._push(struct.unpack('<i', self._read(4))[0])

    def _binint1(self):
        self._push(self._read(1)[0])

    def _binint2(self):
        self._push(struct.unpack('<H', self._read(2))[0])

    def _long(self):
        data = self._readline()[:-1]
        if data.endswith(b'L'):
            data = data[:-1]
        self._push(int(data, 0))

    def _long1(self):
        n = self._read(1)[0]
        self._push(int.from_bytes(self._read(n), 'little', signed=True))

    def _long4(self):
        n = struct.unpack('<i', self._read(4))[0]
        if n < 0:
            raise pickle.UnpicklingError('negative LONG4 byte count')
        self._push(int.from_bytes(self._read(n), 'little', signed=True))

    def _float(self):
        self._push(float(self._readline()[:-1]))

    def _binfloat(self):
        self._push(struct.unpack('>d', self._read(8))[0])

    def _string(self):
        data = self._readline()[:-1]
        if len(data) >= 2 and data[0] == data[-1] and data[:1] in b'"\'':
            data = data[1:-1]
        else:
            raise pickle.UnpicklingError('malformed STRING opcode')
        self._push(self._decode_str(codecs.escape_decode(data)[0]))

    def _sized(self, fmt, size):
        n = struct.unpack(fmt, self._read(size))[0]
        if n > sys.maxsize:
            raise pickle.UnpicklingError('string too long')
        data = self._read(n)
        if len(data) != n:
            raise pickle.UnpicklingError('checkpoint pickle ended early')
        return data

    def _binstring(self):
        n = struct.unpack('<i', self._read(4))[0]
        if n < 0:
            raise pickle.UnpicklingError('negative BINSTRING length')
        self._push(self._decode_str(self._read(n)))

    def _short_binstring(self):
        self._push(self._decode_str(self._read(self._read(1)[0])))

    def _binbytes(self):
        self._push(self._sized('<I', 4))

    def _short_binbytes(self):
        self._push(self._read(self._read(1)[0]))

    def _binbytes8(self):
        self._push(self._sized('<Q', 8))

    def _bytearray8(self):
        self._push(bytearray(self._sized('<Q', 8)))

    def _unicode(self):
        self._push(str(self._readline()[:-1], 'raw-unicode-escape'))

    def _binunicode(self):
        self._push(str(self._sized('<I', 4), 'utf-8', 'surrogatepass'))

    def _short_binunicode(self):
        self._push(str(self._read(self._read(1)[0]), 'utf-8',
                       'surrogatepass'))

    def _binunicode8(self):
        self._push(str(self._sized('<Q', 8), 'utf-8', 'surrogatepass'))

    def _empty_tuple(self):
        self._push(())

    def _tuple(self):
        self._push(tuple(self._pop_mark()))

    def _tuple1(self):
        self.stack[-1] = (self.stack[-1], )

    def _tuple2(self):
        self.stack[-2:] = [(self.stack[-2], self.stack[-1])]

    def _tuple3(self):
        self.stack[-3:] = [(self.stack[-3], self.stack[-2], self.stack[-1])]

    def _empty_list(self):
        self._push([])

    def _list(self):
        self._push(self._pop_mark())

    def _list_target(self):
        target = self.stack[-1]
        if type(target) is not list:
            _refuse(f'appending to {_describe(target)}', 'is not a list')
        return target

    def _append(self):
        value = self.stack.pop()
        self._list_target().append(value)

    def _appends(self):
        items = self._pop_mark()
        self._list_target().extend(items)

    def _empty_dict(self):
        self._push({})

    def _dict(self):
        items = self._pop_mark()
        self._push({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def _dict_target(self):
        target = self.stack[-1]
        if type(target) not in (dict, collections.OrderedDict,
                                collections.Counter) and \
                id(type(target)) not in _tables().placeholders:
            _refuse(f'setting items of {_describe(target)}', 'is not a dict')
        return target

    def _setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._dict_target()[key] = value

    def _setitems(self):
        items = self._pop_mark()
        target = self._dict_target()
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _empty_set(self):
        self._push(set())

    def _additems(self):
        items = self._pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            _refuse(f'adding items to {_describe(target)}', 'is not a set')
        target.update(items)

    def _frozenset(self):
        self._push(frozenset(self._pop_mark()))

    # -- memo -----------------------------------------------------------------
    def _get(self):
        self._push(self.memo[int(self._readline()[:-1])])

    def _binget(self):
        self._push(self.memo[self._read(1)[0]])

    def _long_binget(self):
        self._push(self.memo[struct.unpack('<I', self._read(4))[0]])

    def _put(self):
        index = int(self._readline()[:-1])
        if index < 0:
            raise pickle.UnpicklingError('negative PUT argument')
        self.memo[index] = self.stack[-1]

    def _binput(self):
        self.memo[self._read(1)[0]] = self.stack[-1]

    def _long_binput(self):
        self.memo[struct.unpack('<I', self._read(4))[0]] = self.stack[-1]

    def _memoize(self):
        self.memo[len(self.memo)] = self.stack[-1]

    # -- the opcodes that reach objects: every one checked --------------------
    def _global(self):
        module = self._readline()[:-1].decode('utf-8')
        name = self._readline()[:-1].decode('utf-8')
        self._push(self.find_class(module, name))

    def _stack_global(self):
        name = self.stack.pop()
        module = self.stack.pop()
        self._push(self.find_class(module, name))

    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if type(args) is not tuple:
            _refuse('REDUCE with non-tuple arguments', 'is malformed')
        tables = _tables()
        if id(func) in tables.placeholders:
            obj = func()
            obj.pickled_args = args
            self.stack[-1] = obj
            return
        if tables.callables.get(id(func)) is not func:
            _refuse(f'a call of {_describe(func)} (REDUCE)',
                    'is not a function the safe loader may call')
        self.stack[-1] = func(*args)

    def _new_object(self, cls, args, kwargs):
        tables = _tables()
        if tables.new_classes.get(id(cls)) is not cls:
            _refuse(f'creating {_describe(cls)} (NEWOBJ)',
                    'is not a class the safe loader may create')
        if type(args) is not tuple or (kwargs and type(kwargs) is not dict):
            _refuse('NEWOBJ with malformed arguments', 'is malformed')
        if id(cls) in tables.placeholders:
            obj = cls()
            if args or kwargs:
                obj.pickled_args = (args, kwargs or {})
            return obj
        if args or kwargs:
            _refuse(f'creating {_describe(cls)} with arguments (NEWOBJ)',
                    'is not how pickle stores it')
        return cls.__new__(cls)

    def _newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self._push(self._new_object(cls, args, None))

    def _newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._push(self._new_object(cls, args, kwargs))

    def _build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        cls = type(inst)
        tables = _tables()
        if id(cls) in tables.placeholders:
            # Kept as data; nothing is set on the object.
            inst.pickled_state = state
            return
        if cls is collections.OrderedDict:
            # A state dict's ``_metadata`` (torch's version information).
            slots = None
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            if slots or (state is not None and (
                    not isinstance(state, dict) or not all(
                        type(k) is str and not k.startswith('__')
                        for k in state))):
                _refuse('OrderedDict state with special attributes',
                        'could change how the object behaves')
            if state:
                vars(inst).update(state)
            return
        try:
            np = _numpy().np
        except ImportError:
            np = None
        if np is not None and cls in (np.ndarray, ) or (
                np is not None and isinstance(inst, np.dtype)):
            if not isinstance(state, tuple) or not all(
                    _plain_data(s) or isinstance(s, (np.dtype, tuple, list))
                    for s in state):
                _refuse(f'{_describe(cls)} state of unexpected types',
                        'is not a plain numpy state')
            inst.__setstate__(state)
            return
        try:
            mm = _mmengine()
        except ImportError:
            mm = None
        if mm is not None and cls is mm.history_buffer:
            mm.build(inst, state)
            return
        _refuse(f'setting the state of {_describe(inst)} (BUILD)',
                'is not an object the safe loader may modify')

    def _persistent_id(self, pid):
        """Only ``('storage', storage type, key, location, numel[, view])``
        reaches torch's ``persistent_load``."""
        ok = type(pid) is tuple and len(pid) in (5, 6) and isinstance(
            pid[0], (str, bytes)) and _ascii(pid[0]) == 'storage'
        if ok:
            storage_type, key, location, numel = pid[1:5]
            ok = (isinstance(storage_type, torch.serialization.StorageType)
                  or storage_type is torch.UntypedStorage) and \
                isinstance(key, (str, bytes)) and \
                isinstance(location, (str, bytes)) and _is_int(numel) and \
                numel >= 0
            if ok and len(pid) == 6:
                view = pid[5]
                ok = view is None or (
                    type(view) is tuple and len(view) == 3
                    and isinstance(view[0], (str, bytes))
                    and _is_int(view[1]) and _is_int(view[2]))
        if not ok:
            _refuse(f'a persistent id {_short_repr(pid)}',
                    'is not a storage of this checkpoint')
        return self.persistent_load(pid)

    def _binpersid(self):
        pid = self.stack.pop()
        self._push(self._persistent_id(pid))

    def _persid(self):
        pid = self._readline()[:-1].decode('ascii', 'replace')
        _refuse(f'a text persistent id {pid!r} (PERSID)',
                'is not a storage of this checkpoint')

    _dispatch = {}


def _ascii(value):
    return value.decode('ascii', 'replace') if isinstance(value,
                                                          bytes) else value


def _short_repr(obj):
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 (only for the message)
        text = f'<{type(obj).__name__}>'
    return text if len(text) <= 80 else text[:77] + '...'


RestrictedUnpickler._dispatch = {
    _op(pickle.PROTO): RestrictedUnpickler._proto,
    _op(pickle.STOP): RestrictedUnpickler._stop,
    _op(pickle.MARK): RestrictedUnpickler._mark,
    _op(pickle.POP): RestrictedUnpickler._pop,
    _op(pickle.POP_MARK): RestrictedUnpickler._pop_mark_op,
    _op(pickle.DUP): RestrictedUnpickler._dup,
    _op(pickle.NONE): RestrictedUnpickler._none,
    _op(pickle.NEWTRUE): RestrictedUnpickler._true,
    _op(pickle.NEWFALSE): RestrictedUnpickler._false,
    _op(pickle.INT): RestrictedUnpickler._int,
    _op(pickle.BININT): RestrictedUnpickler._binint,
    _op(pickle.BININT1): RestrictedUnpickler._binint1,
    _op(pickle.BININT2): RestrictedUnpickler._binint2,
    _op(pickle.LONG): RestrictedUnpickler._long,
    _op(pickle.LONG1): RestrictedUnpickler._long1,
    _op(pickle.LONG4): RestrictedUnpickler._long4,
    _op(pickle.FLOAT): RestrictedUnpickler._float,
    _op(pickle.BINFLOAT): RestrictedUnpickler._binfloat,
    _op(pickle.STRING): RestrictedUnpickler._string,
    _op(pickle.BINSTRING): RestrictedUnpickler._binstring,
    _op(pickle.SHORT_BINSTRING): RestrictedUnpickler._short_binstring,
    _op(pickle.BINBYTES): RestrictedUnpickler._binbytes,
    _op(pickle.SHORT_BINBYTES): RestrictedUnpickler._short_binbytes,
    _op(pickle.UNICODE): RestrictedUnpickler._unicode,
    _op(pickle.BINUNICODE): RestrictedUnpickler._binunicode,
    _op(pickle.EMPTY_TUPLE): RestrictedUnpickler._empty_tuple,
    _op(pickle.TUPLE): RestrictedUnpickler._tuple,
    _op(pickle.TUPLE1): RestrictedUnpickler._tuple1,
    _op(pickle.TUPLE2): RestrictedUnpickler._tuple2,
    _op(pickle.TUPLE3): RestrictedUnpickler._tuple3,
    _op(pickle.EMPTY_LIST): RestrictedUnpickler._empty_list,
    _op(pickle.LIST): RestrictedUnpickler._list,
    _op(pickle.APPEND): RestrictedUnpickler._append,
    _op(pickle.APPENDS): RestrictedUnpickler._appends,
    _op(pickle.EMPTY_DICT): RestrictedUnpickler._empty_dict,
    _op(pickle.DICT): RestrictedUnpickler._dict,
    _op(pickle.SETITEM): RestrictedUnpickler._setitem,
    _op(pickle.SETITEMS): RestrictedUnpickler._setitems,
    _op(pickle.GET): RestrictedUnpickler._get,
    _op(pickle.BINGET): RestrictedUnpickler._binget,
    _op(pickle.LONG_BINGET): RestrictedUnpickler._long_binget,
    _op(pickle.PUT): RestrictedUnpickler._put,
    _op(pickle.BINPUT): RestrictedUnpickler._binput,
    _op(pickle.LONG_BINPUT): RestrictedUnpickler._long_binput,
    _op(pickle.GLOBAL): RestrictedUnpickler._global,
    _op(pickle.REDUCE): RestrictedUnpickler._reduce,
    _op(pickle.NEWOBJ): RestrictedUnpickler._newobj,
    _op(pickle.BUILD): RestrictedUnpickler._build,
    _op(pickle.BINPERSID): RestrictedUnpickler._binpersid,
    _op(pickle.PERSID): RestrictedUnpickler._persid,
}
# Protocols 4 and 5.
RestrictedUnpickler._dispatch.update({
    _op(pickle.FRAME): RestrictedUnpickler._frame,
    _op(pickle.SHORT_BINUNICODE): RestrictedUnpickler._short_binunicode,
    _op(pickle.BINUNICODE8): RestrictedUnpickler._binunicode8,
    _op(pickle.BINBYTES8): RestrictedUnpickler._binbytes8,
    _op(pickle.EMPTY_SET): RestrictedUnpickler._empty_set,
    _op(pickle.ADDITEMS): RestrictedUnpickler._additems,
    _op(pickle.FROZENSET): RestrictedUnpickler._frozenset,
    _op(pickle.NEWOBJ_EX): RestrictedUnpickler._newobj_ex,
    _op(pickle.STACK_GLOBAL): RestrictedUnpickler._stack_global,
    _op(pickle.MEMOIZE): RestrictedUnpickler._memoize,
})
if hasattr(pickle, 'BYTEARRAY8'):
    RestrictedUnpickler._dispatch[_op(
        pickle.BYTEARRAY8)] = RestrictedUnpickler._bytearray8


def _restricted_load(file, *, encoding='ASCII', errors='strict',
                     fix_imports=True):
    """``pickle.load`` with the restrictions of :class:`RestrictedUnpickler`
    (the legacy format reads its header pickles with ``load``)."""
    return RestrictedUnpickler(file, encoding=encoding, errors=errors,
                               fix_imports=fix_imports).load()


def _make_pickle_module():
    module = types.ModuleType(
        'dwnet_mm_restricted_pickle',
        'The pickle module torch.load gets from dwnet_mm: both entry points '
        'restricted.')
    module.Unpickler = RestrictedUnpickler
    module.load = _restricted_load
    module.UnpicklingError = pickle.UnpicklingError
    return module


#: What ``torch.load(..., pickle_module=restricted_pickle)`` gets: the
#: ``Unpickler`` and the ``load`` torch calls are both restricted.
restricted_pickle = _make_pickle_module()

# ---------------------------------------------------------------------------
# safe_load
# ---------------------------------------------------------------------------

_state = threading.local()


def _trust_stack():
    if not hasattr(_state, 'trust'):
        _state.trust = []
    return _state.trust


def _context_trust():
    stack = _trust_stack()
    return bool(stack and stack[-1])


def _sniff(source):
    """'zip', 'tar' or 'legacy' (the format torch.load will take)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, 'rb') as f:
            return _sniff(f)
    start = source.tell()
    try:
        if source.read(4) == b'PK\x03\x04':
            return 'zip'
        source.seek(start)
        try:
            with tarfile.open(fileobj=source, mode='r:'):
                return 'tar'
        except tarfile.TarError:
            return 'legacy'
    finally:
        source.seek(start)


def _is_torchscript(source):
    """TorchScript archives: torch.load would hand them to torch.jit.load."""
    reader = torch._C.PyTorchFileReader(
        os.fspath(source) if isinstance(source, os.PathLike) else source)
    try:
        return 'constants.pkl' in reader.get_all_records()
    finally:
        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)


def _full_pickle_load(source, map_location, name):
    warnings.warn(
        f'{name}: loading with full pickle (trusted by trust_checkpoint / '
        '--trust-checkpoint); this runs any code the file contains',
        stacklevel=3)
    if not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    return torch.load(source, map_location=map_location, weights_only=False)


def _load_source(source, map_location, trust, name):
    """Load a local path or a seekable binary file (see :func:`safe_load`)."""
    if not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    try:
        return torch.load(source, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError:
        pass
    except RuntimeError:
        # torch's safe loader refuses the .tar format and TorchScript
        # archives outright (refused below too); other errors stand.
        form = _sniff(source)
        if form == 'legacy' or (form == 'zip'
                                and not _is_torchscript(source)):
            raise
    try:
        form = _sniff(source)
        if form == 'tar':
            raise UnsafeCheckpointError(
                'the pre-2018 .tar checkpoint format',
                'the safe loader does not read')
        if form == 'zip' and _is_torchscript(source):
            raise UnsafeCheckpointError(
                'a TorchScript archive',
                'torch.load would hand to torch.jit.load (load it with '
                'torch.jit.load if you trust it)')
        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)
        return torch.load(source, map_location=map_location,
                          weights_only=False,
                          pickle_module=restricted_pickle)
    except UnsafeCheckpointError as e:
        if not trust:
            raise UnsafeCheckpointError(e.refused, e.reason, name) from None
    return _full_pickle_load(source, map_location, name)


def safe_load(filename, map_location='cpu', trust=False):
    """Load a checkpoint without running code from it.

    Args:
        filename (str | os.PathLike | file): A local path, a URL or an
            mmengine scheme (``https://``, ``open-mmlab://``, ``s3://`` ...:
            fetched by mmengine's loaders, read by this function), or a
            binary file object.
        map_location: As for ``torch.load``. Defaults to 'cpu'.
        trust (bool): For a file you trust: if the safe readers refuse it,
            unpickle it with full pickle (``torch.load(weights_only=False)``),
            which runs any code it contains. Inside
            :func:`checkpoint_loading` (the tools' ``--trust-checkpoint``)
            the context's choice applies too. Defaults to False.

    Returns:
        The loaded object. Objects of :data:`KNOWN_HARMLESS_CLASSES` come
        back as :class:`PickledObject` dicts.

    Raises:
        UnsafeCheckpointError: If the file pickles anything else, and
            ``trust`` is off.
        FileNotFoundError: If a local file does not exist.
    """
    trust = bool(trust) or _context_trust()
    if isinstance(filename, (str, os.PathLike)):
        name = os.fspath(filename)
        if '://' in name:
            return _load_remote(name, map_location, trust)
        if not osp.isfile(name):
            raise FileNotFoundError(
                f'checkpoint file {name!r} does not exist; check the path '
                'in init_cfg / --checkpoint')
        return _load_source(name, map_location, trust, name)
    name = getattr(filename, 'name', None) or '<checkpoint buffer>'
    if not (hasattr(filename, 'seek') and filename.seekable()):
        filename = io.BytesIO(filename.read())
    return _load_source(filename, map_location, trust, str(name))


def _load_remote(url, map_location, trust):
    from mmengine.runner.checkpoint import CheckpointLoader
    with checkpoint_loading(trust=trust):
        return CheckpointLoader.load_checkpoint(url, map_location)


# ---------------------------------------------------------------------------
# mmengine's checkpoint loading, routed through safe_load while active.
# ---------------------------------------------------------------------------


class _TorchWithSafeLoad:
    """What mmengine's checkpoint module sees as ``torch`` while
    :func:`checkpoint_loading` is active: torch, but ``load`` is safe."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def load(self, f, map_location=None, *args, **kwargs):
        # Whatever weights_only / pickle_module the caller passes: safe.
        return safe_load(f, map_location=map_location)


def _safe_load_url(url, model_dir=None, map_location=None, progress=True,
                   check_hash=False, file_name=None, **kwargs):
    """mmengine's ``load_url``: download into torch's hub cache as it does,
    then read the file with :func:`safe_load`."""
    import re
    from urllib.parse import urlparse
    hub = torch.hub
    if model_dir is None:
        model_dir = osp.join(hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    filename = file_name or osp.basename(urlparse(url).path)
    cached_file = osp.join(model_dir, filename)
    if not osp.exists(cached_file):
        sys.stderr.write(f'Downloading: "{url}" to {cached_file}\n')
        hash_prefix = None
        if check_hash:
            match = re.search(r'-([a-f0-9]*)\.', filename)
            hash_prefix = match.group(1) if match else None
        hub.download_url_to_file(url, cached_file, hash_prefix,
                                 progress=progress)
    return safe_load(cached_file, map_location=map_location)


_patch_lock = threading.RLock()
_patch = dict(depth=0, saved=None)


@contextlib.contextmanager
def checkpoint_loading(trust=False):
    """Route mmengine's checkpoint reads through :func:`safe_load`.

    While active, ``mmengine.runner.checkpoint`` (``Runner.resume``,
    ``load_from``, ``load_checkpoint``, every ``Pretrained`` init_cfg, all
    URL schemes) reads files with :func:`safe_load`: mmengine's own resume
    files, the authors' files and plain state dicts load; anything else
    raises :class:`UnsafeCheckpointError`. torch's process-wide
    safe-globals list is not touched. The tools wrap their Runner in it.

    Args:
        trust (bool): Let files the safe readers refuse be unpickled with
            full pickle (the tools' ``--trust-checkpoint``). Defaults to
            False.
    """
    import mmengine.runner.checkpoint as mm_checkpoint
    with _patch_lock:
        if _patch['depth'] == 0:
            _patch['saved'] = (mm_checkpoint.torch, mm_checkpoint.load_url)
            mm_checkpoint.torch = _TorchWithSafeLoad(mm_checkpoint.torch)
            mm_checkpoint.load_url = _safe_load_url
        _patch['depth'] += 1
    stack = _trust_stack()
    stack.append(bool(trust) or _context_trust())
    try:
        yield
    finally:
        stack.pop()
        with _patch_lock:
            _patch['depth'] -= 1
            if _patch['depth'] == 0:
                mm_checkpoint.torch, mm_checkpoint.load_url = _patch['saved']
                _patch['saved'] = None

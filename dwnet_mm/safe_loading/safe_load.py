"""Read checkpoints without letting them run code, crash or hang the process.

:func:`safe_load` is the one reader of checkpoints in dwnet_mm (the
``Pretrained`` init_cfg, the converters, the tools, and mmengine's loaders
inside :func:`checkpoint_loading`). For a ``.pth`` file it

1. checks the container and scans its pickles before torch sees them
   (:mod:`.container_checks`: STORED zip records only, a fixed list of
   globals, caps on depth, opcodes and memo);
2. unpickles it with torch's own ``weights_only`` unpickler, with checked
   stand-ins for the few other types real checkpoints hold
   (:mod:`.stand_ins`) on torch's safe-globals list while it reads;
3. walks the result (memoised, depth-capped), refusing tampered objects
   (tensors with hooks or attributes, views past their storage, dicts with
   attributes) and turning the stand-ins into the real objects.

``.safetensors`` files are read with the ``safetensors`` package. Only with
``trust`` is a file the checks refuse unpickled with full pickle. Every
message shows the file's text through :func:`ascii`, capped.
"""
import contextlib
import contextvars
import io
import os
import os.path as osp
import pickle
import threading
import warnings
from collections import Counter, OrderedDict

import torch

from .container_checks import MAX_DEPTH, check_container, shown
from .stand_ins import STAND_INS, Damaged, Refused, StandIn, standard_object

__all__ = ['UnsafeCheckpointError', 'checkpoint_loading', 'safe_load']

_FIX = ('If you trust this file (you made it, or its source is trusted), '
        'load it with trust_checkpoint=True in the Pretrained init_cfg, '
        '--trust-checkpoint in the tools or safe_load(..., trust=True), '
        'which runs any code it contains; then convert it once to '
        '.safetensors (tools/model_converters, OUT.safetensors) and share '
        'that.')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint the safe loader refuses, or cannot read.

    Attributes:
        refused (str): What was refused (printable ASCII).
        filename (str | None): The checkpoint.
    """

    def __init__(self, refused, filename=None, damaged=False):
        self.refused, self.filename = refused, filename
        if damaged:
            super().__init__(f'cannot read checkpoint {shown(filename)}: '
                             f'{refused} (a damaged or truncated file, or not '
                             'a checkpoint)')
            return
        where = f'{shown(filename)}: ' if filename else ''
        super().__init__(
            f'{where}refused to load the checkpoint: it holds {refused}. The '
            'safe loader reads tensors, plain containers, numeric numpy '
            'data, mmengine HistoryBuffers and the authors\' yacs CfgNode. '
            + _FIX)

    def __reduce__(self):
        return type(self), (self.refused, self.filename)


class _WhileUsed:
    """Process-wide state set up by the first user and torn down by the
    last, whichever thread they run in."""

    def __init__(self, setup, teardown):
        self.setup, self.teardown = setup, teardown
        self.users, self.lock = 0, threading.Lock()

    @contextlib.contextmanager
    def __call__(self):
        with self.lock:
            if not self.users:
                self.setup()
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if not self.users:
                    self.teardown()


def _remove_stand_ins():
    kept = [g for g in torch.serialization.get_safe_globals()
            if g not in STAND_INS]
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(kept)


# torch's list is process-wide: the stand-ins stay on it while any thread
# reads (other readers may meet them too; they are checked).
_stand_ins_allowed = _WhileUsed(
    lambda: torch.serialization.add_safe_globals(list(STAND_INS)),
    _remove_stand_ins)


def _plain(obj, memo, depth=0):
    """``obj`` checked and rebuilt from plain types (see the module doc)."""
    if obj is None or type(obj) in (bool, int, float, complex, str, bytes):
        return obj
    if id(obj) in memo:
        if memo[id(obj)][1] is memo:
            raise Refused('a container that holds itself')
        return memo[id(obj)][1]
    if depth > MAX_DEPTH:
        raise Refused(f'objects nested more than {MAX_DEPTH} deep')
    memo[id(obj)] = (obj, memo)  # in progress
    kind, walk = type(obj), lambda v: _plain(v, memo, depth + 1)
    if kind in (torch.Tensor, torch.nn.Parameter):
        if vars(obj) or obj._backward_hooks or obj.layout != torch.strided:
            raise Refused('a tensor with hooks or attributes')
        if obj.numel() * obj.element_size() > obj.untyped_storage().nbytes():
            raise Refused('a tensor viewing more than its storage holds')
        new = obj
    elif kind in (dict, OrderedDict, Counter):
        extra = {} if kind is dict else dict(vars(obj))
        metadata = extra.pop('_metadata', None)
        if set(extra) - StandIn.CFG_NODE_STATE:
            raise Refused(f'a dict with attributes {shown(sorted(extra))}')
        new = kind((walk(k), walk(v)) for k, v in obj.items())
        if metadata is not None:
            new._metadata = walk(metadata)
    elif kind in (list, tuple, set, frozenset):
        new = kind(walk(v) for v in obj)
    elif isinstance(obj, (torch.dtype, torch.device)):
        new = obj
    else:
        new = standard_object(obj, walk)
    memo[id(obj)] = (obj, new)
    return new


def _load_bytes(data, map_location):
    """Steps 1-3 of the module doc (raises :class:`Refused`)."""
    try:
        check_container(data)
        with _stand_ins_allowed():
            obj = torch.load(io.BytesIO(data), map_location=map_location,
                             weights_only=True)
    except (Refused, MemoryError):
        raise
    except Exception as e:  # torch's refusals, damaged data
        raise Damaged(f'{type(e).__name__}: {shown(e)}') from None
    return _plain(obj, {})


# One entry per active checkpoint_loading (trust, identity): each context
# removes its own, whatever the order they end in.
_trust = contextvars.ContextVar('dwnet_mm_checkpoint_trust', default=())


def _scheme(name):
    """mmengine's registered URL prefix of ``name`` ('' for a local path)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    return max((p for p in CheckpointLoader._schemes
                if p and name.startswith(p)), key=len, default='')


def safe_load(filename, map_location='cpu', trust=None):
    """Load a checkpoint without running code from it.

    Args:
        filename (str | os.PathLike | file): A local ``.pth`` or
            ``.safetensors`` path, a URL of a scheme mmengine registers
            (``https://``, ``open-mmlab://``...), or a binary file object.
        map_location: As for ``torch.load``. Defaults to 'cpu'.
        trust (bool, optional): If the checks refuse the file, unpickle it
            with full pickle, which runs any code it contains. None takes
            the choice of the enclosing :func:`checkpoint_loading`; an
            explicit False always refuses. Defaults to None.

    Returns:
        The loaded object: tensors, plain containers, numbers, numpy arrays
        and scalars, mmengine HistoryBuffers.

    Raises:
        UnsafeCheckpointError: If the checks refuse the file (and it is not
            trusted) or it cannot be read.
        FileNotFoundError: If a local file does not exist.
    """
    if trust is None:
        trust = bool(_trust.get()) and _trust.get()[-1][0]
    if not isinstance(filename, (str, os.PathLike)):
        name = getattr(filename, 'name', None) or '<checkpoint buffer>'
        data = filename.read()
    elif _scheme(os.fspath(filename)):
        from mmengine.runner.checkpoint import CheckpointLoader
        with checkpoint_loading(trust):
            return CheckpointLoader.load_checkpoint(os.fspath(filename),
                                                    map_location)
    else:
        name = os.fspath(filename)
        if not osp.isfile(name):
            raise FileNotFoundError(f'checkpoint file {shown(name)} does not '
                                    'exist; check the path in init_cfg / '
                                    '--checkpoint')
        if name.endswith('.safetensors'):
            from safetensors.torch import load_file
            return load_file(name, device=map_location if isinstance(
                map_location, str) else 'cpu')
        with open(name, 'rb') as f:
            data = f.read()
    try:
        return _load_bytes(data, map_location)
    except Refused as e:
        if not trust or isinstance(e, Damaged):
            raise UnsafeCheckpointError(str(e), name,
                                        isinstance(e, Damaged)) from None
    warnings.warn(f'{shown(name)}: loading with full pickle (trusted by '
                  'trust_checkpoint / --trust-checkpoint); this runs any '
                  'code the file contains', stacklevel=2)
    return torch.load(io.BytesIO(data), map_location=map_location,
                      weights_only=False)


def _mmengine_loader(filename, map_location):
    scheme = _scheme(filename)
    if scheme in ('http://', 'https://'):
        # Into torch's hub cache, as mmengine's own load_url does.
        folder = osp.join(torch.hub.get_dir(), 'checkpoints')
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, osp.basename(filename.split('?')[0]))
        if not osp.exists(path):
            torch.hub.download_url_to_file(filename, path)
        filename = path
    elif scheme:
        # The other schemes name files mmengine's own loaders find and read
        # with torch.load (weights_only by default): stand-ins, then walked.
        try:
            with _stand_ins_allowed():
                loaded = _original_loaders[scheme](filename, map_location)
            return _plain(loaded, {})
        except Refused as e:
            raise UnsafeCheckpointError(str(e), filename) from None
    return safe_load(filename, map_location)


_mmengine_loader.__name__ = 'load_from_dwnet_mm_safe_load'
_original_loaders = {}


def _register_loaders():
    from mmengine.runner.checkpoint import CheckpointLoader
    _original_loaders.update(CheckpointLoader._schemes)
    for prefix in _original_loaders:
        CheckpointLoader.register_scheme(prefix, _mmengine_loader, force=True)


def _restore_loaders():
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in _original_loaders.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)
    _original_loaders.clear()


_loaders_registered = _WhileUsed(_register_loaders, _restore_loaders)


@contextlib.contextmanager
def checkpoint_loading(trust=False):
    """Read mmengine's checkpoint loads through :func:`safe_load`.

    Inside it, mmengine's ``CheckpointLoader`` (``Runner.resume``,
    ``load_from``, ``load_checkpoint``, ``Pretrained`` init_cfgs, every URL
    scheme) reads with :func:`safe_load`, through mmengine's own
    ``register_scheme``; its loaders come back when the last such context
    in the process ends. ``trust`` is a ``contextvars`` value: it holds for
    this context's loads (not other threads' or asyncio tasks') that do not
    pass ``trust=False``.

    Args:
        trust (bool): Unpickle files the checks refuse with full pickle
            (the tools' ``--trust-checkpoint``). Defaults to False.
    """
    entry = (bool(trust), object())
    _trust.set(_trust.get() + (entry, ))
    try:
        with _loaders_registered():
            yield
    finally:
        _trust.set(tuple(e for e in _trust.get() if e is not entry))

"""Hostile checkpoints: no crash, no corruption, no code, no hang.

The corpus is built here, from the attacks that got through the earlier
hand-written loader (one case per class, ``CORPUS``), the classic code
execution payloads, and random mutations of real checkpoints (the fuzz
test). Every case is written in both torch formats (zip and legacy) and
read through every entry point that reads a checkpoint, each in its own
forked process under a memory cap and a time limit (hostile_worker.py).

The assertions are about harm, not about the exception class: the process
was not killed by a signal, no canary file appeared, numpy's string casts
still work, it stayed under its time and memory caps, and whatever it said
is printable ASCII. Where a case must be refused, that is asserted too.
"""
import asyncio
import collections
import io
import json
import os
import os.path as osp
import random
import re
import struct
import subprocess
import sys
import types
import warnings
import zipfile

import numpy as np
import pytest
import torch

from dwnet_mm.safe_loading import (UnsafeCheckpointError,
                                   checkpoint_loading, safe_load)
from checkpoint_files import checkpoint_with_pickle
from test_checkpoint_loading import SMALL, authors_shapes, make_state_dict

HERE = osp.dirname(osp.abspath(__file__))
FORMATS = ('zip', 'legacy')
ENTRIES = ('safe_load', 'mmengine_load_checkpoint',
           'mmengine_checkpoint_loader', 'pretrained_init_cfg',
           'publish_model')
SECONDS = 20
PRINTABLE = re.compile(r'[\x20-\x7e\n]*')


# ---------------------------------------------------------------------------
# Building payloads: objects whose pickle calls exactly what they name.
# ---------------------------------------------------------------------------
class Call:
    """Pickles as ``fn(*args)`` (then ``BUILD state`` if given)."""

    def __init__(self, fn, *args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        if self.state is None:
            return self.fn, self.args
        return self.fn, self.args, self.state


def fake_global(module, name):
    """A function that pickles as the global ``module.name``: a module of
    that name (no real one has it) is made for the pickler to find."""
    fn = types.FunctionType((lambda: None).__code__, {}, name)
    fn.__module__, fn.__qualname__ = module, name
    sys.modules[module] = types.ModuleType(module)
    setattr(sys.modules[module], name, fn)
    return fn


def reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


def dtype_with_state(name, state):
    """A dtype that pickles as ``numpy.dtype(name)`` with BUILD ``state``."""
    return Call(np.dtype, name, False, False, state=state)


def deep_tuple_key(depth):
    """``{((...(0,),...),): None}`` nested ``depth`` deep, in raw opcodes."""
    return (b'\x80\x02}K\x00' + b'\x85' * depth + b'Ns.')


def shared_lists(depth):
    """A list DAG: level i holds level i-1 twice (2**depth leaves)."""
    level = [1]
    for _ in range(depth):
        level = [level, level]
    return level


def overlapping_deflate_zip(form_bytes):
    """A zip whose central directory names one DEFLATED record many times
    (torch's reader would inflate each name)."""
    records = io.BytesIO()
    with zipfile.ZipFile(records, 'w', zipfile.ZIP_DEFLATED) as z:
        z.writestr('archive/data/0', b'\0' * (4 << 20))
    blob = records.getvalue()
    info = zipfile.ZipFile(io.BytesIO(blob)).infolist()[0]
    local = blob[:info.header_offset + 30 + len(info.filename) +
                 len(info.extra) + info.compress_size]
    central = []
    for i in range(1000):
        name = f'archive/data/{i}'.encode()
        central.append(struct.pack(
            '<4s6H3L5H2L', b'PK\x01\x02', 20, 20, 0, 8, 0, 0, info.CRC,
            info.compress_size, info.file_size, len(name), 0, 0, 0, 0, 0, 0) +
            name)
    directory = b''.join(central)
    end = struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, len(central),
                      len(central), len(directory), len(local), 0)
    return local + directory + end


def corpus(canary):
    """name -> (object to torch.save | raw file bytes, must be refused)."""
    _reconstruct, scalar = reconstruct()
    from mmengine.logging import HistoryBuffer
    storage = torch.arange(4.)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        typed = storage.storage()
    cmd = f'touch {canary}'
    return {
        # 1. numpy's shared string descriptors.
        # (copy=False: numpy's own shared descriptor)
        'numpy scalar of dtype U without data': (
            {'meta': Call(scalar, Call(np.dtype, 'U0', False, False))}, True),
        'numpy scalar of dtype S without data': (
            {'meta': Call(scalar, Call(np.dtype, 'S0', False, False))}, True),
        'numpy scalar of dtype U in a real state dict': (
            dict(make_state_dict(authors_shapes(SMALL['channels'],
                                                SMALL['depths'])),
                 meta=Call(scalar, Call(np.dtype, 'U0', False, False))),
            True),
        # 2. object array whose shape is longer than its list.
        'object ndarray shape past its list': (
            {'meta': Call(_reconstruct, np.ndarray, (0, ), b'b',
                          state=(1, (1 << 20, ), np.dtype('O'), False,
                                 [1, 2]))}, True),
        # 3. raw bytes taken as PyObject pointers.
        'O8 dtype with refcount flags over raw bytes': (
            {'meta': Call(_reconstruct, np.ndarray, (0, ), b'b',
                          state=(1, (2, ), dtype_with_state(
                              'O8', (3, '|', None, None, None, 8, 8, 0x3f)),
                                 False, b'\x41' * 16))}, True),
        # 5. torch.Size iterating a huge stride-0 view.
        'torch.Size of a stride-0 view': (
            {'meta': Call(torch.Size, torch.zeros(1).expand(1 << 23))}, True),
        'stride-0 view tensor': (
            {'w': torch.zeros(1).expand(1 << 23)}, True),
        # 6. a refused call whose argument repr is gigabytes.
        'refused call on a shared-list DAG': (
            {'meta': Call(os.system, shared_lists(30))}, True),
        # 7. C recursion on a 300k-deep tuple used as a dict key.
        'deep tuple dict key': (deep_tuple_key(300_000), True),
        # 8. walkers without a memo on a 200-byte DAG.
        'shared-list DAG in meta': ({'state_dict': {},
                                     'meta': shared_lists(40)}, False),
        # 9. one DEFLATED record named 1000 times.
        'overlapping DEFLATED zip records': (overlapping_deflate_zip, True),
        # 10. terminal escapes in a refused name.
        'escape bytes in a refused global': (
            {'meta': Call(fake_global('os\x1b[8m', 'system\x1b[0m'), cmd)},
            True),
        # 12. objects tampered with through torch's own rebuild functions.
        'tensor with backward hooks': (
            {'w': Call(torch._utils._rebuild_tensor_v2, typed, 0, (4, ),
                       (1, ), False, {0: torch.Tensor})}, True),
        'tensor with plain backward hooks': (
            {'w': Call(torch._utils._rebuild_tensor_v2, typed, 0, (4, ),
                       (1, ), False, {0: 1})}, True),
        'Parameter whose state makes it a Tensor': (
            {'w': Call(torch._utils._rebuild_parameter_with_state, storage,
                       False, collections.OrderedDict(),
                       {'__class__': torch.Tensor})}, True),
        'OrderedDict carrying __deepcopy__': (
            {'runtime_info': Call(collections.OrderedDict,
                                  state={'__deepcopy__':
                                         collections.Counter})}, True),
        'OrderedDict carrying an allowed __deepcopy__': (
            {'runtime_info': Call(collections.OrderedDict,
                                  state={'__deepcopy__':
                                         collections.OrderedDict})}, True),
        # Code execution, as a file would try it.
        'os.system': ({'meta': Call(os.system, cmd)}, True),
        'builtins.exec': (
            {'meta': Call(exec, f'import os; os.system({cmd!r})')}, True),
        'getattr gadget': ({'meta': Call(getattr, getattr, '__self__')},
                           True),
        'HistoryBuffer with a foreign statistics method': (
            {'meta': Call(HistoryBuffer, state={
                'statistics_methods': {'mean': os.system}, 'max_length': 1,
                '_log_history': np.zeros(1), '_count_history': np.ones(1)})},
            True),
    }


def file_bytes(payload, form):
    if callable(payload):
        return payload(form)
    if isinstance(payload, bytes):
        return checkpoint_with_pickle(payload, form)
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=form == 'zip')
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# The harness.
# ---------------------------------------------------------------------------
class Worker:

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, osp.join(HERE, 'hostile_worker.py')],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=HERE)

    def run(self, path, entry, seconds=SECONDS):
        self.process.stdin.write(json.dumps(
            dict(path=str(path), entry=entry, seconds=seconds)) + '\n')
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, 'the worker died'
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope='module')
def worker():
    worker = Worker()
    yield worker
    worker.close()


def harm(outcome, canary):
    """What harm the case did (empty if none)."""
    found = []
    if outcome['signal'] is not None:
        found.append(f'killed by signal {outcome["signal"]}')
    if outcome['timeout']:
        found.append(f'ran past {SECONDS} s')
    if canary is not None and osp.exists(canary):
        found.append('the canary appeared: code ran')
    report = outcome['report'] or {}
    if not report:
        found.append(f'no report (exit code {outcome["exit_code"]})')
    elif not report['numpy_intact']:
        found.append('numpy string casts are broken')
    if report.get('error') == 'MemoryError':
        found.append('hit the memory cap')
    if not PRINTABLE.fullmatch(report.get('message', '')):
        found.append('control bytes in the message: '
                     f'{report["message"][:200]!r}')
    return found


@pytest.fixture(scope='module')
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp('hostile')
    canary = folder / 'canary'
    built = {}
    for name, (payload, refused) in corpus(canary).items():
        for form in FORMATS:
            path = folder / f'{len(built)}.pth'
            path.write_bytes(file_bytes(payload, form))
            built[name, form] = (path, refused)
    return canary, built


CASE_NAMES = list(corpus('canary'))


@pytest.mark.parametrize('entry', ENTRIES)
@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('name', CASE_NAMES)
def test_hostile_file_does_no_harm(name, form, entry, worker, cases):
    canary, built = cases
    path, refused = built[name, form]
    outcome = worker.run(path, entry)
    assert harm(outcome, canary) == [], (name, outcome)
    if refused:
        assert outcome['report']['error'] in (
            'UnsafeCheckpointError', 'SystemExit'), (name, outcome)


@pytest.mark.parametrize('name, expected', [
    ('os.system', 'the canary appeared: code ran'),
    ('numpy scalar of dtype U without data', 'numpy string casts are broken'),
    ('object ndarray shape past its list', 'killed by signal 11'),
])
def test_harness_sees_harm(name, expected, worker, cases):
    """Under full pickle the corpus does harm, and the harness says so."""
    canary, built = cases
    path, _ = built[name, 'zip']
    assert expected in harm(worker.run(path, 'full_pickle'), canary)
    if canary.exists():
        canary.unlink()


# ---------------------------------------------------------------------------
# Mutation fuzzing of real checkpoints.
# ---------------------------------------------------------------------------
def pickle_region(data):
    """(start, end) of the object pickle: data.pkl, or the legacy header."""
    if data[:4] == b'PK\x03\x04':
        info = next(i for i in zipfile.ZipFile(io.BytesIO(data)).infolist()
                    if i.filename.endswith('data.pkl'))
        start = info.header_offset + 30 + len(info.filename) + len(
            info.extra)
        return start, start + info.file_size
    import pickletools
    stream = io.BytesIO(data)
    for _ in range(5):
        for _ in pickletools.genops(stream):
            pass
    return 0, stream.tell()


def real_checkpoints(folder):
    """The authors' layout with a pickled CfgNode, an mmengine resume file,
    and a DWNet state dict, each in both formats."""
    from mmengine.runner import Runner
    sys.path.insert(0, osp.dirname(HERE))
    from test_stack import _runner
    config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    config.CfgNode = CfgNode
    sys.modules['yacs'] = types.ModuleType('yacs')
    sys.modules['yacs.config'] = sys.modules['yacs'].config = config
    node = CfgNode(MODEL=CfgNode(TYPE='dwnet'), EPOCHS=300)
    node.__dict__.update({'__immutable__': False,
                          '__deprecated_keys__': set()})
    authors = dict(model=make_state_dict(
        authors_shapes([8, 16, 32, 64], [1, 1, 1, 1])), config=node,
        epoch=299, max_accuracy=81.3)
    runner = _runner(folder / 'runner')
    assert isinstance(runner, Runner)
    runner.train()
    resume = torch.load(folder / 'runner' / 'epoch_3.pth',
                        weights_only=False)
    from dwnet_mm.models import DWNet
    state_dict = DWNet(arch=dict(channels=[8, 16, 32, 64],
                                 depths=[1, 1, 1, 1])).state_dict()
    files = []
    for obj in (authors, resume, state_dict):
        for form in FORMATS:
            buffer = io.BytesIO()
            torch.save(obj, buffer,
                       _use_new_zipfile_serialization=form == 'zip')
            files.append(buffer.getvalue())
    del sys.modules['yacs.config'], sys.modules['yacs']
    return files


def mutate(data, rng):
    start, end = pickle_region(data) if rng.random() < 0.8 else (0, len(
        data))
    data = bytearray(data)
    kind = rng.choice(('flip', 'flip', 'truncate', 'insert', 'delete'))
    if kind == 'truncate':
        return bytes(data[:rng.randrange(len(data))])
    for _ in range(rng.randint(1, 8)):
        # Deletions shorten the file; an index past its new end would
        # fail the test, not the loader.
        end = min(end, len(data))
        i = rng.randrange(start, end)
        if kind == 'flip':
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 'insert':
            data.insert(i, rng.randrange(256))
        else:
            del data[i]
    return bytes(data)


FUZZ_CASES = 300


def test_mutation_fuzz(tmp_path, worker):
    files = real_checkpoints(tmp_path)
    for data in files:  # the originals load
        path = tmp_path / 'original.pth'
        path.write_bytes(data)
        outcome = worker.run(path, 'safe_load')
        assert outcome['report']['error'] is None, outcome
    rng = random.Random(0)
    failures = []
    for i in range(FUZZ_CASES):
        path = tmp_path / f'fuzz{i % 4}.pth'
        path.write_bytes(mutate(files[i % len(files)], rng))
        entry = ENTRIES[i % 3]  # the reading paths; publish adds writing
        outcome = worker.run(path, entry)
        found = harm(outcome, None)
        if found:
            # The originals hold timestamps, so keep the case to replay it.
            kept = path.rename(tmp_path / f'failing{i}.pth')
            failures.append((i, entry, str(kept), found))
    assert failures == []


# ---------------------------------------------------------------------------
# Trust stays where it was given.
# ---------------------------------------------------------------------------
@pytest.fixture
def payload_file(tmp_path):
    canary = tmp_path / 'canary'
    path = tmp_path / 'payload.pth'
    torch.save({'meta': Call(os.system, f'touch {canary}')}, path)
    return str(path), canary


def test_explicit_false_beats_a_trusted_context(payload_file):
    path, canary = payload_file
    with checkpoint_loading(trust=True):
        with pytest.raises(UnsafeCheckpointError):
            safe_load(path, trust=False)
    assert not canary.exists()


def test_trust_does_not_cross_asyncio_tasks(payload_file):
    path, canary = payload_file

    async def trusted(entered, done):
        with checkpoint_loading(trust=True):
            entered.set()
            await done.wait()

    async def untrusted(entered, done):
        await entered.wait()
        try:
            with pytest.raises(UnsafeCheckpointError):
                safe_load(path)
            from mmengine.runner import load_checkpoint
            with pytest.raises(UnsafeCheckpointError):
                load_checkpoint(torch.nn.Linear(2, 2), path)
        finally:
            done.set()

    async def main():
        entered, done = asyncio.Event(), asyncio.Event()
        await asyncio.gather(trusted(entered, done),
                             untrusted(entered, done))

    asyncio.run(main())
    assert not canary.exists()


def test_contexts_exiting_out_of_order(payload_file):
    path, canary = payload_file
    trusted, untrusted = checkpoint_loading(True), checkpoint_loading(False)
    trusted.__enter__()
    untrusted.__enter__()
    trusted.__exit__(None, None, None)
    with pytest.raises(UnsafeCheckpointError):
        safe_load(path)
    untrusted.__exit__(None, None, None)
    with pytest.raises(UnsafeCheckpointError):
        safe_load(path)
    assert not canary.exists()


def test_path_with_a_scheme_separator_loads(tmp_path):
    folder = tmp_path / 'x:'
    folder.mkdir()
    torch.save({'w': torch.ones(2)}, folder / 'y.pth')
    assert torch.equal(safe_load(f'{tmp_path}/x://y.pth')['w'],
                       torch.ones(2))

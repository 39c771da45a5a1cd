"""Checks of a torch checkpoint's container and pickles, before torch reads
them (:func:`check_container`).

* A zip holds only STORED records (``torch.save`` writes nothing else), none
  duplicated or overlapping, none larger than the file.
* Each pickle (zip: the ``*.pkl`` records; legacy format: the five pickles
  before the storage data) is scanned with :mod:`pickletools`: only the
  opcodes torch's ``weights_only`` unpickler reads, only
  :data:`ALLOWED_GLOBALS`, and caps on nesting depth (a 300k-deep tuple
  crashes CPython when hashed or freed), opcode count and memo size. The
  depth of every stack item is tracked; nothing is built.
"""
import io
import pickletools
import struct
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

import torch

from .stand_ins import STAND_INS, Damaged, Refused

MAX_DEPTH = 100
MAX_OPCODES = 5_000_000
MAX_MEMO = 1_000_000
#: What real checkpoints name: tensors, storages, dtypes, OrderedDict,
#: Counter (torch's MultiStepLR), set, bytes (protocol 2) and the
#: stand-ins' names.
ALLOWED_GLOBALS = frozenset(
    {'collections.OrderedDict', 'collections.Counter', 'builtins.set',
     '_codecs.encode'} |
    {f'torch._utils.{f}' for f in ('_rebuild_tensor', '_rebuild_tensor_v2',
                                   '_rebuild_parameter')} |
    {f'torch.{n}' for n in dir(torch) if n.endswith('Storage')} |
    {str(v) for v in vars(torch).values() if isinstance(v, torch.dtype)} |
    {name for _, name in STAND_INS})
# The opcodes torch's weights_only unpickler reads (protocol 2).
_OPCODES = frozenset(
    'GLOBAL NEWOBJ REDUCE BUILD APPEND APPENDS SETITEM SETITEMS MARK TUPLE '
    'TUPLE1 TUPLE2 TUPLE3 NONE NEWFALSE NEWTRUE EMPTY_TUPLE EMPTY_LIST '
    'EMPTY_DICT EMPTY_SET BININT BININT1 BININT2 BINFLOAT BINUNICODE '
    'SHORT_BINSTRING BINPERSID BINGET LONG_BINGET BINPUT LONG_BINPUT LONG1 '
    'PROTO STOP'.split())
# Opcodes that add to the container below their arguments.
_IN_PLACE = frozenset('APPEND APPENDS SETITEM SETITEMS BUILD'.split())


def shown(text, limit=200):
    """Attacker-controlled text as printable ASCII, at most ``limit`` long."""
    text = ascii(str(text))
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _refuse(what):
    raise Refused(what)


def _zip_pickles(data):
    """The pickles of a torch zip file, after checking its records."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OverflowError) as e:
        raise Damaged(f'a damaged zip ({shown(e)})') from None
    if any(i.filename.endswith(('constants.pkl', '.py')) for i in infos):
        _refuse('a TorchScript archive (load it with torch.jit.load if you '
                'trust it)')
    names, end, pickles = set(), 0, []
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.compress_type != zipfile.ZIP_STORED or \
                info.compress_size != info.file_size:
            _refuse(f'a compressed zip record {shown(info.filename)} '
                    '(torch.save stores records uncompressed)')
        if info.filename in names:
            _refuse(f'a duplicate zip record {shown(info.filename)}')
        names.add(info.filename)
        header = data[info.header_offset:info.header_offset + 30]
        if info.header_offset < end or len(header) < 30 or \
                header[:4] != b'PK\x03\x04':
            _refuse(f'overlapping zip records at {shown(info.filename)}')
        start = info.header_offset + 30 + sum(struct.unpack('<HH',
                                                            header[26:30]))
        end = start + info.file_size
        if end > len(data):
            _refuse(f'a zip record {shown(info.filename)} larger than the '
                    'file')
        if info.filename.endswith('.pkl'):
            pickles.append(data[start:end])
    return pickles


def _scan(stream, file_size):
    """Check one pickle: opcodes torch reads, allowed globals, caps."""
    stack, marks, memo = [], [], {}
    for count, (op, arg, _) in enumerate(pickletools.genops(stream)):
        if count > MAX_OPCODES:
            _refuse(f'more than {MAX_OPCODES} pickle opcodes')
        if op.name not in _OPCODES:
            _refuse(f'the pickle opcode {op.name}')
        if op.name == 'STOP':
            return
        if op.name == 'MARK':
            marks.append(len(stack))
            continue
        if op.name in ('BINPUT', 'LONG_BINPUT'):
            if len(memo) >= MAX_MEMO:
                _refuse(f'more than {MAX_MEMO} memo entries')
            if len(stack) <= (marks[-1] if marks else 0):
                raise Damaged('a pickle that memoises nothing')
            memo[arg] = stack[-1]
            continue
        popped, below = [], len(op.stack_before)
        if pickletools.markobject in op.stack_before:
            if not marks:
                _refuse('a pickle with an unmatched MARK')
            popped, stack[marks[-1]:] = stack[marks[-1]:], []
            marks.pop()
            below = op.stack_before.index(pickletools.markobject)
        if len(stack) - (marks[-1] if marks else 0) < below:
            _refuse('a pickle that pops an empty stack')
        if below:
            popped, stack[-below:] = stack[-below:] + popped, []
        depths = [d for d, _ in popped]
        value = None
        if op.name in _IN_PLACE:
            depth = max([depths[0]] + [d + 1 for d in depths[1:]])
        else:
            depth = 1 + max(depths, default=0)
        if op.name == 'GLOBAL':
            module, name = arg.split(' ', 1)
            module, name = NAME_MAPPING.get((module, name), (
                IMPORT_MAPPING.get(module, module), name))
            if f'{module}.{name}' not in ALLOWED_GLOBALS:
                _refuse(f'the global {shown(module + "." + name)}, which is '
                        'not a tensor, container or known type')
        elif op.name in ('BINGET', 'LONG_BINGET'):
            if arg not in memo:
                _refuse('a pickle memo reference to nothing')
            depth, value = memo[arg]
        elif op.name.startswith('TUPLE'):
            value = tuple(v for _, v in popped)
        elif op.name == 'BINPERSID':
            pid = popped[0][1]
            if type(pid) is not tuple or len(pid) < 5 or \
                    type(pid[4]) is not int or \
                    not 0 <= pid[4] <= file_size:
                _refuse('a persistent id that is not a storage within the '
                        'file')
            depth = 1
        elif isinstance(arg, (int, str)):
            value = arg
        if depth > MAX_DEPTH:
            _refuse(f'objects nested more than {MAX_DEPTH} deep')
        stack.extend([(depth, value)] * len(op.stack_after))
    raise Damaged('a truncated pickle')


def check_container(data):
    """Check a checkpoint file's bytes (raises :class:`Refused`)."""
    if data[:4] == b'PK\x03\x04':
        for pkl in _zip_pickles(data):
            _scan(io.BytesIO(pkl), len(data))
    elif data[257:262] == b'ustar':
        _refuse('the pre-2018 .tar checkpoint format')
    else:  # legacy: magic, protocol, sys info, object, storage keys
        stream = io.BytesIO(data)
        for _ in range(5):
            _scan(stream, len(data))

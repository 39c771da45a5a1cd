"""Hostile checkpoints: no entry point that reads a checkpoint runs code.

Every payload is a hand-written pickle (raw opcodes, so it is exactly what
it says) that would create a canary file if it were unpickled with full
pickle (``test_payloads_are_live`` checks that). Each is embedded in both
torch formats (zip, and the legacy non-zip format, for which torch also
reads header pickles with ``pickle_module.load``) and given to every entry
point that reads a checkpoint. Each must raise the clear error
(:class:`UnsafeCheckpointError`, naming what it refused and the fix), and
the canary must not appear.

The authors' files, whose ``config`` is a pickled yacs ``CfgNode``, and
mmengine's own resume files still load, without touching torch's
process-wide safe-globals list.
"""
import collections
import io
import os
import os.path as osp
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import types
import warnings

import pytest
import torch

import dwnet_mm
from dwnet_mm.converters import load_checkpoint_file, load_dwnet_checkpoint
from dwnet_mm.models import DWNet
from dwnet_mm.safe_loading import (UnsafeCheckpointError,
                                   checkpoint_loading, safe_load)
from checkpoint_files import checkpoint_with_pickle, legacy_checkpoint
from test_checkpoint_loading import SMALL, authors_shapes, make_state_dict

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for _folder in ('tests', osp.join('tests', 'test_tools')):
    if osp.join(REPO, _folder) not in sys.path:
        sys.path.insert(0, osp.join(REPO, _folder))
from test_stack import _runner, added_safe_globals  # noqa: E402
from tools_helpers import (TINY_CONFIG, data_options,  # noqa: E402
                           load_tool, make_tiny_imagenet)

FORMATS = ('zip', 'legacy')

# ---------------------------------------------------------------------------
# Raw pickle opcodes (protocol 2 unless stated).
# ---------------------------------------------------------------------------
PROTO2 = b'\x80\x02'
STOP = b'.'
MARK = b'('
TUPLE = b't'
REDUCE = b'R'
BUILD = b'b'
NEWOBJ = b'\x81'
EMPTY_DICT = b'}'
EMPTY_TUPLE = b')'
NONE = b'N'
POP = b'0'


def g(module, name):
    """GLOBAL module.name"""
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def s(text):
    """BINUNICODE text"""
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def t(*items):
    """MARK items TUPLE"""
    return MARK + b''.join(items) + TUPLE


def lst(*items):
    """EMPTY_LIST MARK items APPENDS"""
    return b']' + MARK + b''.join(items) + b'e'


def put(i):
    return b'q' + bytes([i])


def get(i):
    return b'h' + bytes([i])


def call(func, *args):
    return func + t(*args) + REDUCE


def pickled(*ops):
    return PROTO2 + b''.join(ops) + STOP


def code_creating(canary):
    return f'open({str(canary)!r}, "w").close()'


def payloads(canary, inner):
    """name -> (pickle bytes, what the error must name).

    ``inner`` is a plain pickle file that runs ``os.system`` (for the
    gadgets that load another file with full pickle).
    """
    cmd = f'touch {canary}'
    code = code_creating(canary)
    rebuild_from_type = g('torch._tensor', '_rebuild_from_type_v2')
    getattr_ = g('builtins', 'getattr')
    return {
        # builtins
        'builtins.__import__': (pickled(
            call(g('builtins', '__import__'), s('os')), put(0), POP,
            call(call(getattr_, get(0), s('system')), s(cmd))),
            'builtins.__import__'),
        # getattr(getattr, '__self__') is the builtins module; torch's own
        # _rebuild_from_type_v2 then calls whatever it is given.
        'builtins.getattr': (pickled(
            call(rebuild_from_type,
                 call(getattr_, call(getattr_, getattr_, s('__self__')),
                      s('exec')), g('torch', 'Tensor'), t(s(code)),
                 EMPTY_DICT)), '_rebuild_from_type_v2'),
        'builtins.eval': (pickled(
            call(g('builtins', 'eval'),
                 s(f'__import__("os").system({cmd!r})'))), 'builtins.eval'),
        'builtins.exec': (pickled(call(g('builtins', 'exec'), s(code))),
                          'builtins.exec'),
        'builtins.compile': (pickled(
            call(g('builtins', 'compile'), s(code), s('<ckpt>'), s('exec')),
            put(0), POP, call(g('builtins', 'exec'), get(0))),
            'builtins.compile'),
        'builtins.open': (pickled(call(g('builtins', 'open'), s(str(canary)),
                                       s('w'))), 'builtins.open'),
        '__builtin__.eval (py2 name)': (pickled(
            call(g('__builtin__', 'eval'),
                 s(f'__import__("os").system({cmd!r})'))), 'builtins.eval'),
        # os, posix, subprocess
        'os.system': (pickled(call(g('os', 'system'), s(cmd))), 'os.system'),
        'posix.system': (pickled(call(g('posix', 'system'), s(cmd))),
                         'posix.system'),
        'subprocess.call': (pickled(
            call(g('subprocess', 'call'), lst(s('touch'), s(str(canary))))),
            'subprocess.call'),
        'subprocess.run': (pickled(
            call(g('subprocess', 'run'), lst(s('touch'), s(str(canary))))),
            'subprocess.run'),
        # gadgets in torch
        'torch.save': (pickled(call(g('torch', 'save'), EMPTY_DICT,
                                    s(str(canary)))), 'torch.save'),
        'torch.serialization.save': (pickled(
            call(g('torch.serialization', 'save'), EMPTY_DICT,
                 s(str(canary)))), 'torch.serialization.save'),
        # torch.load(f, None, pickle) unpickles f with full pickle.
        'torch.load': (pickled(
            call(g('torch', 'load'), s(str(inner)), NONE,
                 g('torch.serialization', 'pickle'))), 'torch.load'),
        'torch.serialization.load': (pickled(
            call(g('torch.serialization', 'load'), s(str(inner)), NONE,
                 g('torch.serialization', 'pickle'))),
            'torch.serialization.load'),
        'torch._utils._import_dotted_name': (pickled(
            call(call(g('torch._utils', '_import_dotted_name'),
                      s('os.system')), s(cmd))),
            'torch._utils._import_dotted_name'),
        # gadgets in numpy
        'numpy.load': (pickled(
            call(g('numpy', 'load'), s(str(inner)), NONE, b'\x88')),
            'numpy.load'),
        'numpy.testing runstring': (pickled(
            call(g('numpy.testing._private.utils', 'runstring'), s(code),
                 EMPTY_DICT)), 'numpy.testing._private.utils.runstring'),
        # opcodes
        'INST': (PROTO2 + MARK + s(cmd) + b'ios\nsystem\n' + STOP, 'INST'),
        'OBJ': (pickled(MARK + g('os', 'system') + s(cmd) + b'o'),
                'os.system'),
        'NEWOBJ': (pickled(
            g('functools', 'partial'), t(g('os', 'system'), s(cmd)), NEWOBJ,
            EMPTY_TUPLE, REDUCE), 'functools.partial'),
        'BUILD': (pickled(
            g('functools', 'partial'), t(g('builtins', 'print')), NEWOBJ,
            t(g('os', 'system'), t(s(cmd)), EMPTY_DICT, NONE), BUILD,
            EMPTY_TUPLE, REDUCE), 'functools.partial'),
        'STACK_GLOBAL (protocol 4)': (b'\x80\x04' + s('os') + s('system') +
                                      b'\x93' + t(s(cmd)) + REDUCE + STOP,
                                      'STACK_GLOBAL'),
        # persistent ids: torch passes them to its own persistent_load
        'BINPERSID': (pickled(
            t(s('storage'), call(g('os', 'system'), s(cmd))), b'Q'),
            'os.system'),
        "BINPERSID ('module', ...)": (pickled(
            t(s('module'), g('collections', 'OrderedDict'), s('src.py'),
              s('class X: pass')), b'Q'), 'persistent id'),
    }


def tamper_payloads():
    """Calls and BUILDs on allowed objects that would change the process
    (no canary: the checks are the error and the unchanged state)."""
    return {
        'BUILD on a torch function': (pickled(
            g('torch._utils', '_rebuild_tensor_v2'),
            t(NONE, b'}' + s('__defaults__') + t(NONE) + b's'), BUILD),
            'BUILD'),
        'BUILD on OrderedDict with __class__': (pickled(
            call(g('collections', 'OrderedDict')),
            t(NONE, b'}' + s('__class__') + g('collections', 'Counter') +
              b's'), BUILD), 'OrderedDict state'),
        '_rebuild_from_type_v2 of another function': (pickled(
            call(g('torch._tensor', '_rebuild_from_type_v2'),
                 g('collections', 'OrderedDict'), g('torch', 'Tensor'),
                 EMPTY_TUPLE, EMPTY_DICT)), '_rebuild_from_type_v2'),
        'HistoryBuffer statistics method injection': (pickled(
            g('mmengine.logging.history_buffer', 'HistoryBuffer'),
            EMPTY_TUPLE, NEWOBJ,
            b'}' + s('statistics_methods') + b'}' + s('mean') +
            g('collections', 'Counter') + b's' + b's', BUILD),
            'statistics methods'),
        'EXT1': (pickled(b'\x82\x01'), 'EXT1'),
        'PERSID (text)': (PROTO2 + b'Pfoo\n' + STOP, 'PERSID'),
    }


# ---------------------------------------------------------------------------
# Writing the two formats by hand.
# ---------------------------------------------------------------------------
def write_legacy(main_pkl, path, in_header=False):
    path.write_bytes(legacy_checkpoint(main_pkl, in_header))
    return path


def write_payload(data, path, form):
    path.write_bytes(checkpoint_with_pickle(data, form))
    return path


# ---------------------------------------------------------------------------
# Entry points: each reads a checkpoint the way users do.
# ---------------------------------------------------------------------------
def ep_safe_load(path, tmp_path):
    safe_load(str(path))


def ep_load_checkpoint_file(path, tmp_path):
    load_checkpoint_file(str(path))


def ep_load_dwnet_checkpoint(path, tmp_path):
    load_dwnet_checkpoint(DWNet(arch=SMALL), str(path))


def ep_init_cfg(path, tmp_path):
    DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                    checkpoint=str(path))).init_weights()


def ep_init_cfg_deploy(path, tmp_path):
    DWNet(arch=SMALL, deploy=True,
          init_cfg=dict(type='Pretrained',
                        checkpoint=str(path))).init_weights()


def ep_mmengine_load(path, tmp_path):
    """Runner.load_checkpoint / resume / load_from / tools/test.py
    (--deploy too) all read through mmengine's CheckpointLoader."""
    from mmengine.runner import load_checkpoint
    with checkpoint_loading():
        load_checkpoint(torch.nn.Linear(2, 2), str(path))


def ep_remote_url(path, tmp_path, monkeypatch):
    def download(url, dst, hash_prefix=None, progress=True):
        shutil.copy(path, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    monkeypatch.setattr(torch.hub, 'get_dir',
                        lambda: str(tmp_path / 'hub'))
    safe_load(f'https://example.invalid/{osp.basename(path)}')


FAST_ENTRY_POINTS = {
    'safe_load': ep_safe_load,
    'load_checkpoint_file': ep_load_checkpoint_file,
    'load_dwnet_checkpoint': ep_load_dwnet_checkpoint,
    'init_cfg Pretrained': ep_init_cfg,
    'init_cfg Pretrained (deploy)': ep_init_cfg_deploy,
    'mmengine load (resume, load_from, test.py)': ep_mmengine_load,
}
CONVERTER_TOOLS = ('tools/model_converters/dwnet_to_mmpretrain.py',
                   'tools/model_converters/dwnet_det_to_mmdet.py',
                   'tools/model_converters/dwnet_seg_to_mmseg.py',
                   'tools/model_converters/publish_model.py')


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / 'canary'
    yield path
    assert not path.exists(), 'a payload ran'


@pytest.fixture
def inner(tmp_path, canary):
    """A plain pickle that runs os.system, for the loading gadgets."""
    path = tmp_path / 'inner.pkl'
    path.write_bytes(
        pickled(call(g('os', 'system'), s(f'touch {canary}'))))
    return path


def check_refused(error, expected):
    message = str(error)
    assert 'refused to load' in message
    assert expected in message, message
    # The fix is named.
    assert 'trust_checkpoint=True' in message
    assert '--trust-checkpoint' in message


PAYLOAD_NAMES = list(payloads('c', 'i'))


@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('payload', PAYLOAD_NAMES)
def test_payloads_are_live(payload, form, tmp_path, canary, inner):
    """Full pickle runs every payload: the other tests are not vacuous."""
    data, _ = payloads(canary, inner)[payload]
    path = write_payload(data, tmp_path / 'evil.pth', form)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 (most payloads break the file)
            pass
    if payload.startswith('BINPERSID ('):
        # torch's legacy persistent_load only inspects it (no canary);
        # the point is that the safe loaders never hand it over.
        return
    assert canary.exists(), f'{payload} did not run under full pickle'
    canary.unlink()


@pytest.mark.parametrize('entry', list(FAST_ENTRY_POINTS))
@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('payload', PAYLOAD_NAMES)
def test_payload_refused(payload, form, entry, tmp_path, canary, inner):
    data, expected = payloads(canary, inner)[payload]
    path = write_payload(data, tmp_path / 'evil.pth', form)
    with pytest.raises(UnsafeCheckpointError) as info:
        FAST_ENTRY_POINTS[entry](path, tmp_path)
    check_refused(info.value, expected)
    assert str(path) in str(info.value)


@pytest.mark.parametrize('payload', PAYLOAD_NAMES)
def test_payload_in_legacy_header_refused(payload, tmp_path, canary, inner):
    """torch reads the legacy magic number with ``pickle_module.load``."""
    data, expected = payloads(canary, inner)[payload]
    path = write_legacy(data, tmp_path / 'evil.pth', in_header=True)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(str(path))
    check_refused(info.value, expected)


@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('payload', PAYLOAD_NAMES)
def test_payload_refused_from_url(payload, form, tmp_path, canary, inner,
                                  monkeypatch):
    data, expected = payloads(canary, inner)[payload]
    path = write_payload(data, tmp_path / 'evil.pth', form)
    with pytest.raises(UnsafeCheckpointError) as info:
        ep_remote_url(path, tmp_path, monkeypatch)
    check_refused(info.value, expected)


@pytest.mark.parametrize('tool', CONVERTER_TOOLS)
@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('payload', PAYLOAD_NAMES)
def test_payload_refused_by_converters(payload, form, tool, tmp_path, canary,
                                       inner):
    data, expected = payloads(canary, inner)[payload]
    path = write_payload(data, tmp_path / 'evil.pth', form)
    module = load_tool(tool)
    with pytest.raises(SystemExit) as info:
        module.main([str(path), str(tmp_path / 'out.pth')])
    check_refused(info.value.code, expected)
    assert not list(tmp_path.glob('out*'))


@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('payload', list(tamper_payloads()))
def test_tampering_refused(payload, form, tmp_path):
    from mmengine.logging import HistoryBuffer
    methods = dict(HistoryBuffer._statistics_methods)
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    data, _ = tamper_payloads()[payload]
    path = write_payload(data, tmp_path / 'evil.pth', form)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(str(path))
    assert str(info.value).isascii() and str(info.value).isprintable()
    assert HistoryBuffer._statistics_methods == methods
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults


# ---------------------------------------------------------------------------
# The Runner tools: tools/test.py (and --deploy), tools/train.py --resume.
# ---------------------------------------------------------------------------
TOOL_PAYLOADS = ('builtins.getattr', 'INST', 'BINPERSID')


@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory):
    return make_tiny_imagenet(tmp_path_factory.mktemp('tiny_imagenet'))


def tool_args(tool, path, tmp_path, tiny_imagenet):
    options = ['--cfg-options', *data_options(tiny_imagenet)]
    work = ['--work-dir', str(tmp_path / 'work')]
    if tool == 'test':
        return 'tools/test.py', [TINY_CONFIG, str(path), *work, *options]
    if tool == 'test --deploy':
        return 'tools/test.py', [
            TINY_CONFIG, str(path), '--deploy', *work, *options
        ]
    return 'tools/train.py', [TINY_CONFIG, '--resume', str(path), *work,
                              *options]


@pytest.mark.parametrize('tool', ('test', 'test --deploy', 'train --resume'))
@pytest.mark.parametrize('form', FORMATS)
@pytest.mark.parametrize('payload', TOOL_PAYLOADS)
def test_payload_refused_by_runner_tools(payload, form, tool, tmp_path,
                                         canary, inner, tiny_imagenet):
    data, expected = payloads(canary, inner)[payload]
    path = write_payload(data, tmp_path / 'evil.pth', form)
    script, argv = tool_args(tool, path, tmp_path, tiny_imagenet)
    with pytest.raises(SystemExit) as info:
        load_tool(script).main(argv)
    check_refused(info.value.code, expected)


# ---------------------------------------------------------------------------
# What must still load.
# ---------------------------------------------------------------------------
@pytest.fixture
def fake_yacs(monkeypatch):
    """A yacs-like ``yacs.config.CfgNode`` (yacs is not a dependency)."""

    class CfgNode(dict):

        def __init__(self, init_dict=None, new_allowed=False):
            super().__init__(init_dict or {})
            self.__dict__['__immutable__'] = False
            self.__dict__['__deprecated_keys__'] = set()
            self.__dict__['__renamed_keys__'] = {}
            self.__dict__['__new_allowed__'] = new_allowed

        def __getattr__(self, name):
            if name in self:
                return self[name]
            raise AttributeError(name)

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    yacs = types.ModuleType('yacs')
    config = types.ModuleType('yacs.config')
    config.CfgNode = CfgNode
    yacs.config = config
    monkeypatch.setitem(sys.modules, 'yacs', yacs)
    monkeypatch.setitem(sys.modules, 'yacs.config', config)
    return CfgNode


def authors_file(path, form, cfg_node):
    """Layout of the authors' save_checkpoint (REFERENCE section 5)."""
    model = make_state_dict(
        authors_shapes(SMALL['channels'], SMALL['depths']))
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    param.sum().backward()
    optimizer.step()
    config = cfg_node({
        'MODEL': cfg_node({'TYPE': 'dwnet', 'NAME': 'dwnet_tiny_patch4'}),
        'TRAIN': cfg_node({'EPOCHS': 300, 'BASE_LR': 1e-3,
                           'BETAS': (0.9, 0.999)}),
        'AMP_OPT_LEVEL': 'O1',
    })
    checkpoint = {
        'model': model,
        'optimizer': optimizer.state_dict(),
        'lr_scheduler': {'t_initial': 300, 'lr_min': 5e-6,
                         'warmup_t': 20, 'base_values': [1e-3],
                         'metric': None, 't_in_epochs': True},
        'max_accuracy': 81.3,
        'epoch': 299,
        'config': config,
        'amp': collections.OrderedDict(
            loss_scaler0={'loss_scale': 65536.0, 'unskipped': 12}),
    }
    torch.save(checkpoint, path,
               _use_new_zipfile_serialization=form == 'zip')
    return checkpoint


def no_full_pickle(monkeypatch):
    """Make every unrestricted pickle entry point fail loudly."""

    def forbidden(*args, **kwargs):
        raise AssertionError('unrestricted pickle was called')

    class Forbidden:

        def __init__(self, *args, **kwargs):
            forbidden()

    for name in ('load', 'loads'):
        monkeypatch.setattr(pickle, name, forbidden)
    for name in ('Unpickler', '_Unpickler'):
        monkeypatch.setattr(pickle, name, Forbidden)


@pytest.mark.parametrize('form', FORMATS)
def test_authors_file_loads_without_full_pickle(form, tmp_path, fake_yacs,
                                                monkeypatch):
    path = tmp_path / 'dwnet_tiny_224.pth'
    original = authors_file(path, form, fake_yacs)
    # torch's safe loader alone refuses it (the CfgNode).
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    monkeypatch.delitem(sys.modules, 'yacs.config')  # nothing imports it
    no_full_pickle(monkeypatch)
    loaded = safe_load(str(path))
    config = loaded['config']
    # The CfgNodes come back as plain OrderedDicts, without their state.
    assert type(config) is collections.OrderedDict and not vars(config)
    assert type(config['MODEL']) is collections.OrderedDict
    assert config['MODEL']['NAME'] == 'dwnet_tiny_patch4'
    assert config['TRAIN']['BETAS'] == (0.9, 0.999)
    for key in ('max_accuracy', 'epoch', 'lr_scheduler', 'amp'):
        assert loaded[key] == original[key]
    for key, value in original['model'].items():
        assert torch.equal(loaded['model'][key], value)
    state = loaded['optimizer']['state'][0]
    for key, value in original['optimizer']['state'][0].items():
        assert torch.equal(state[key], value)
    assert loaded['optimizer']['param_groups'] == \
        original['optimizer']['param_groups']


@pytest.mark.parametrize('form', FORMATS)
def test_authors_file_loads_at_every_entry_point(form, tmp_path, fake_yacs,
                                                 monkeypatch):
    path = tmp_path / 'dwnet_tiny_224.pth'
    original = authors_file(path, form, fake_yacs)
    monkeypatch.delitem(sys.modules, 'yacs.config')
    model = DWNet(arch=SMALL)
    assert load_dwnet_checkpoint(model, str(path))['layout'] == 'authors'
    expected = model.state_dict()
    for deploy in (False, True):
        pretrained = DWNet(arch=SMALL, deploy=deploy,
                           init_cfg=dict(type='Pretrained',
                                         checkpoint=str(path)))
        pretrained.init_weights()
        if not deploy:
            for key, value in pretrained.state_dict().items():
                assert torch.equal(value, expected[key]), key
    with checkpoint_loading():
        from mmengine.runner.checkpoint import _load_checkpoint
        assert _load_checkpoint(str(path))['epoch'] == original['epoch']
    dst = tmp_path / 'converted.pth'
    load_tool('tools/model_converters/dwnet_to_mmpretrain.py').main(
        [str(path), str(dst)])
    converted = torch.load(dst, weights_only=True)
    assert any(k.startswith('backbone.') for k in converted['state_dict'])
    published = load_tool('tools/model_converters/publish_model.py').publish(
        str(path), str(tmp_path / 'published.pth'))
    # The config became a plain dict: the file needs no dwnet_mm class.
    assert torch.load(published, weights_only=True)['config']['MODEL'][
        'TYPE'] == 'dwnet'


def test_mmengine_resume_file_loads_without_global_allow_list(tmp_path):
    before = torch.serialization.get_safe_globals()
    runner = _runner(tmp_path)
    runner.train()
    path = str(tmp_path / 'epoch_3.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # torch alone refuses it
    loaded = safe_load(path)
    reference = torch.load(path, weights_only=False)
    buffers = loaded['message_hub']['log_scalars']
    assert set(buffers) == set(reference['message_hub']['log_scalars'])
    for key, buffer in buffers.items():
        assert buffer.mean() == reference['message_hub']['log_scalars'][
            key].mean()
    assert loaded['meta']['epoch'] == 3
    assert added_safe_globals(before) == []


def test_import_leaves_torch_safe_globals_alone():
    script = (
        'import torch, mmengine.runner, numpy\n'
        'before = torch.serialization.get_safe_globals()\n'
        'import dwnet_mm, dwnet_mm.converters, dwnet_mm.runner_setup\n'
        'after = torch.serialization.get_safe_globals()\n'
        'added = [g for g in after if g not in before]\n'
        'assert added == [], added\n'
        'assert getattr not in after\n')
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_context_is_scoped():
    """mmengine's loaders are ours only inside the context; its module
    attributes and torch's safe-globals list are never changed."""
    import mmengine.runner.checkpoint as mm_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader
    before = dict(CheckpointLoader._schemes)
    safe_globals = torch.serialization.get_safe_globals()
    with checkpoint_loading():
        with dwnet_mm.allow_mmengine_checkpoints():
            assert all(loader.__name__ == 'load_from_dwnet_mm_safe_load'
                       for loader in CheckpointLoader._schemes.values())
        assert CheckpointLoader._schemes != before
        assert added_safe_globals(safe_globals) == []
    assert dict(CheckpointLoader._schemes) == before
    assert mm_checkpoint.torch is torch


# ---------------------------------------------------------------------------
# The opt-in, and formats the safe loader does not read.
# ---------------------------------------------------------------------------
class Unknown:
    """A class the safe loader does not know (harmless, for the opt-in)."""

    def __init__(self):
        self.value = 7


@pytest.mark.parametrize('form', FORMATS)
def test_trust_checkpoint_opt_in(form, tmp_path):
    path = tmp_path / 'own.pth'
    state = make_state_dict(
        authors_shapes(SMALL['channels'], SMALL['depths']))
    torch.save({'model': state, 'extra': Unknown()}, path,
               _use_new_zipfile_serialization=form == 'zip')
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(str(path))
    check_refused(info.value, f'{__name__}.Unknown')
    with pytest.warns(UserWarning, match='full pickle'):
        assert safe_load(str(path), trust=True)['extra'].value == 7
    model = DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                            checkpoint=str(path)))
    with pytest.raises(UnsafeCheckpointError):
        model.init_weights()
    model = DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                            checkpoint=str(path),
                                            trust_checkpoint=True))
    with pytest.warns(UserWarning, match='full pickle'):
        model.init_weights()
    with checkpoint_loading(trust=True), pytest.warns(UserWarning):
        assert safe_load(str(path))['extra'].value == 7
    tool = load_tool('tools/model_converters/dwnet_to_mmpretrain.py')
    with pytest.raises(SystemExit):
        tool.main([str(path), str(tmp_path / 'a.pth')])
    with pytest.warns(UserWarning, match='full pickle'):
        tool.main([str(path), str(tmp_path / 'b.pth'), '--trust-checkpoint'])
    assert (tmp_path / 'b.pth').exists()


def test_torchscript_and_tar_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / 'scripted.pt'
    torch.jit.save(scripted, str(path))
    with pytest.raises(UnsafeCheckpointError, match='TorchScript'):
        safe_load(str(path))
    tar_path = tmp_path / 'old.tar'
    with tarfile.open(tar_path, 'w') as tar:
        for name in ('storages', 'tensors', 'pickle'):
            info = tarfile.TarInfo(name)
            data = pickle.dumps(0, protocol=2)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeCheckpointError, match='tar'):
        safe_load(str(tar_path))


def test_no_unsafe_torch_load_outside_the_opt_in():
    """Only safe_load's trusted path calls torch.load(weights_only=False)."""
    hits = []
    for root in ('dwnet_mm', 'tools'):
        for folder, _, files in os.walk(osp.join(REPO, root)):
            for name in files:
                if not name.endswith('.py'):
                    continue
                with open(osp.join(folder, name), encoding='utf-8') as f:
                    text = f.read()
                for i, line in enumerate(text.splitlines()):
                    if 'weights_only=False' in line and \
                            not line.lstrip().startswith(('#', '1.', '3.')):
                        hits.append((name, i, line.strip()))
    code = [h for h in hits if '``' not in h[2]]
    assert {h[0] for h in code} == {'safe_load.py'}, code
    assert len(code) == 1, code

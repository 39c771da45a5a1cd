"""A wheel of dwnet_mm, installed (not editable) in a venv outside the
checkout, imports, builds DWNet in each framework's scope and runs it, and
knows its classification configs by name (its model index and configs are
in the wheel).

The wheel is built with ``pip wheel --no-deps`` from a copy of the checkout's
files (a build in place would write ``build/`` into the work tree); the venv
reuses the project venv's installed packages through a ``.pth`` line, so
nothing is downloaded. The native kernels are compiled while the wheel is
built (``setup.py``); here no C++ compiler is found, so the build leaves
them out and the installed package falls back to PyTorch ops with one
warning: compiling them costs minutes on CI's two cores, and the checkout's
editable install compiles the same sources. ``DWNET_TEST_WHEEL_NATIVE=1``
builds the wheel with them and expects them to load.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys

from install_helpers import REPO_ROOT, overlay_venv

CHECK = r'''
import os, sys, warnings
warnings.simplefilter('always')
import torch
import dwnet_mm
from dwnet_mm.ops import native_ops
from mmengine.registry import DefaultScope, init_default_scope

repo, site = sys.argv[1], sys.argv[2]
assert not os.path.abspath(dwnet_mm.__file__).startswith(repo + os.sep), \
    dwnet_mm.__file__
assert os.path.abspath(dwnet_mm.__file__).startswith(site + os.sep), \
    dwnet_mm.__file__
print('imported', dwnet_mm.__version__, 'from', dwnet_mm.__file__)

arch = dict(channels=[16, 32, 64, 128], depths=[1, 1, 1, 1])
x = torch.randn(1, 3, 64, 64)
with warnings.catch_warnings(record=True) as caught:
    # Every stage's map by default, in every framework.
    for scope in ('mmpretrain', 'mmdet', 'mmseg'):
        init_default_scope(scope)
        registry = __import__(f'{scope}.registry', fromlist=['MODELS'])
        model = registry.MODELS.build(dict(type='DWNet', arch=arch)).eval()
        with torch.no_grad():
            outs = model(x)
        assert [tuple(o.shape) for o in outs] == [
            (1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2)], (
            scope, [tuple(o.shape) for o in outs])
        print(scope, model.out_type, [tuple(o.shape) for o in outs])
    # The static conv runs in oneDNN: ask for the kernels inside the block.
    kernels = native_ops()
ours = [str(w.message) for w in caught if 'dwnet_mm:' in str(w.message)]
print('native kernels:', 'yes' if kernels is not None else 'no')
print('dwnet_mm warnings:', ours)
if os.environ.get('EXPECT_NATIVE') == '1':
    assert kernels is not None and not ours, ours
    assert kernels.__file__.startswith(site + os.sep)
else:
    assert kernels is None
    assert len(ours) == 1 and 'run on PyTorch ops' in ours[0], ours

# The model index and its configs come with the wheel (dwnet_mm/.mim).
from dwnet_mm.utils.model_index import model_index_path, register_model_index
from mmpretrain.apis import ModelHub, list_models
register_model_index()
assert model_index_path().startswith(site + os.sep), model_index_path()
names = list_models('*dwnet*')
assert 'dwnet-tiny_8xb128_in1k' in names, names
config = ModelHub.get('dwnet-tiny_8xb128_in1k').config
assert config.filename.startswith(site + os.sep), config.filename
assert config.model.backbone.type == 'DWNet', config.model.backbone
print('model index:', model_index_path())
'''


def _copy_checkout(dst):
    """The checkout's files as git would commit them (no venv, no builds)."""
    files = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others',
         '--exclude-standard'], cwd=REPO_ROOT, check=True,
        capture_output=True, text=True).stdout.split('\0')
    for name in filter(None, files):
        src = osp.join(REPO_ROOT, name)
        if osp.isfile(src):
            os.makedirs(osp.dirname(osp.join(dst, name)), exist_ok=True)
            shutil.copy2(src, osp.join(dst, name))


def test_wheel_installs_and_runs(tmp_path):
    source, dist = tmp_path / 'src', tmp_path / 'dist'
    _copy_checkout(str(source))
    env = dict(os.environ, PIP_NO_INPUT='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    native = os.environ.get('DWNET_TEST_WHEEL_NATIVE') == '1'
    if not native:
        # No compiler: the kernels' build fails and the wheel leaves them
        # out (setup.py's optional build_ext).
        env['CC'] = env['CXX'] = str(tmp_path / 'no-such-compiler')
    subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--no-index', '-q', '-w',
        str(dist), str(source)
    ], check=True, env=env, timeout=900)
    wheels = sorted(dist.glob('dwnet_mm-*.whl'))
    assert len(wheels) == 1, wheels

    python, site = overlay_venv(tmp_path / 'venv')
    subprocess.run([
        sys.executable, '-m', 'pip', '--python', python, 'install',
        '--no-deps', '--no-index', '-q', str(wheels[0])
    ], check=True, env=env, timeout=300)

    run_env = dict(os.environ, EXPECT_NATIVE='1' if native else '0')
    run_env.pop('PYTHONPATH', None)
    run_env.pop('DWNET_MM_NATIVE', None)
    proc = subprocess.run(
        [python, '-c', CHECK, REPO_ROOT,
         osp.realpath(site)], cwd=str(tmp_path), env=run_env,
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    print(proc.stdout)

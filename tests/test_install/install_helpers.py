"""Helpers of the install tests: processes that see dwnet_mm as a user does.

* :func:`blocking_env` runs a subprocess in which some top-level packages
  cannot be imported (a ``sitecustomize`` puts an import hook first on
  ``sys.meta_path``), as if only one framework's extra were installed.
* :func:`overlay_venv` makes a virtual environment outside the checkout that
  reuses the project venv's installed packages (a ``.pth`` line, no copies),
  but not its editable ``dwnet_mm``, so that a wheel can be installed into it.
"""
import os
import os.path as osp
import re
import subprocess
import sys
import sysconfig

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
README = osp.join(REPO_ROOT, 'README.md')
BLOCK_ENV = 'DWNET_TEST_BLOCKED_IMPORTS'

_SITECUSTOMIZE = '''\
"""Test hook: the packages named in ${env} cannot be imported."""
import os
import sys

_BLOCKED = frozenset(
    name for name in os.environ.get(${env!r}, '').split(',') if name)


class _BlockedImports:
    """A meta path finder that fails the import of blocked packages."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition('.')[0] in _BLOCKED:
            raise ModuleNotFoundError(
                f'No module named {fullname!r} (blocked by the test: '
                'as if not installed)', name=fullname)
        return None


if _BLOCKED:
    sys.meta_path.insert(0, _BlockedImports())
'''


def write_import_blocker(folder):
    """Write the ``sitecustomize.py`` hook into ``folder``; returns it."""
    os.makedirs(folder, exist_ok=True)
    text = _SITECUSTOMIZE.replace('${env!r}', repr(BLOCK_ENV)).replace(
        '${env}', BLOCK_ENV)
    with open(osp.join(folder, 'sitecustomize.py'), 'w') as f:
        f.write(text)
    return folder


def blocking_env(hook_folder, blocked, **extra):
    """Environment of a subprocess where ``blocked`` cannot be imported."""
    env = dict(os.environ)
    paths = [str(hook_folder)]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED='1')
    env[BLOCK_ENV] = ','.join(blocked)
    env.update(extra)
    return env


def readme_recipes(path=README):
    """The config recipes of the README's "Use DWNet in your own mm
    project" section, by the framework of their ``_base_``.

    Returns:
        dict[str, str]: e.g. ``{'mmdet': "_base_ = 'mmdet::...'\\n..."}``.
    """
    with open(path, encoding='utf-8') as f:
        text = f.read()
    start = text.index('\n## Use DWNet in your own mm project')
    end = text.find('\n## ', start + 1)
    section = text[start:end if end >= 0 else None]
    recipes = {}
    for block in re.findall(r'```python\n(.*?)```', section, re.S):
        match = re.search(r"^_base_ = '(\w+)::", block, re.M)
        if match:
            assert match.group(1) not in recipes, 'two recipes for one ' \
                'framework'
            recipes[match.group(1)] = block
    return recipes


def overlay_venv(path, timeout=120):
    """A venv at ``path`` that reuses this venv's packages, not its dwnet_mm.

    Created ``--without-pip``; a ``.pth`` file adds this interpreter's
    ``site-packages`` after the new venv's own. ``.pth`` files inside that
    folder are not run from there, so the editable install's import hook is
    not installed and only a ``dwnet_mm`` installed into the new venv can be
    imported.

    Returns:
        tuple[str, str]: The new venv's python and its site-packages.
    """
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(path)], check=True, timeout=timeout)
    python = osp.join(str(path), 'bin', 'python')
    site = subprocess.run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
         '["purelib"])'], check=True, capture_output=True, text=True,
        timeout=timeout).stdout.strip()
    with open(osp.join(site, 'project_venv_packages.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    return python, site


def framework_tool(framework, name):
    """Path of a framework's own ``tools/<name>`` as shipped in its package
    (``<package>/.mim/tools/``), found without importing the framework."""
    import importlib.util
    spec = importlib.util.find_spec(framework)
    assert spec is not None, f'{framework} is not installed'
    path = osp.join(spec.submodule_search_locations[0], '.mim', 'tools',
                    name)
    assert osp.isfile(path), path
    return path

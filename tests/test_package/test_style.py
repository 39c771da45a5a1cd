"""The package, its tools, configs and tests pass flake8 (pycodestyle's 79
columns, pyflakes' unused names): the house style, kept by the suite."""
import os.path as osp
import subprocess
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

PATHS = ['dwnet_mm', 'tools', 'configs', 'tests', 'setup.py']


def test_flake8_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8', *PATHS],
                            cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

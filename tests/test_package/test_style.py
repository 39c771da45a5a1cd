"""The package, its tools, configs and tests pass flake8 (pycodestyle's 79
columns, pyflakes' unused names): the house style, kept by the suite."""
import subprocess
import sys

PATHS = ['dwnet_mm', 'tools', 'configs', 'tests', 'setup.py']


def test_flake8_clean(repo_root):
    result = subprocess.run([sys.executable, '-m', 'flake8', *PATHS],
                            cwd=repo_root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

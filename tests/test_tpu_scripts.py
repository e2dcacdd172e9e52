"""tpu/ scripts: `bash -n` and shellcheck clean (issue 7)."""
import glob
import os
import shutil
import subprocess

import pytest

from conftest import REPO

SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'tpu', '**', '*.sh'), recursive=True))


def test_there_are_tpu_scripts():
  names = {os.path.basename(s) for s in SCRIPTS}
  assert {'create.sh', 'setup.sh', 'data.sh', 'launch.sh', 'sync.sh', 'delete.sh'} <= names


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda s: os.path.relpath(s, REPO))
def test_bash_syntax(script):
  out = subprocess.run(['bash', '-n', script], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck not installed (apt-get install shellcheck)')
def test_shellcheck_clean():
  out = subprocess.run(['shellcheck', *SCRIPTS], capture_output=True, text=True, cwd=os.path.join(REPO, 'tpu'))
  assert out.returncode == 0, out.stdout[-3000:]


def test_required_variables_are_checked():
  """Every script that talks to Google Cloud fails fast on a missing PROJECT/ZONE/TPU_NAME."""
  common = open(os.path.join(REPO, 'tpu', 'common.sh')).read()
  for var in ('PROJECT', 'ZONE', 'TPU_NAME'):
    assert '${' + var + '?' in common

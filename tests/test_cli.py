"""The command line: bad invocations fail fast with one line that says what to do."""
import subprocess
import sys

from conftest import REPO


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'e2urec_jax', *args], capture_output=True, text=True,
                        cwd=REPO, timeout=120)


def test_unknown_command_is_one_line_error(tmp_path):
  out = _cli('fly', '--workdir', str(tmp_path))
  assert out.returncode == 2
  assert out.stderr.strip().count('\n') == 0 and 'unknown command' in out.stderr


def test_unknown_config_key_is_one_line_error(tmp_path):
  out = _cli('prepare', '--config=configs/demo.py', '--config.data.no_such_key=3', f'--workdir={tmp_path}')
  assert out.returncode == 2
  assert out.stderr.strip().count('\n') == 0 and 'no_such_key' in out.stderr


def test_wrong_type_config_value_is_one_line_error(tmp_path):
  out = _cli('prepare', '--config=configs/demo.py', '--config.data.history_k=many', f'--workdir={tmp_path}')
  assert out.returncode == 2
  assert out.stderr.strip().count('\n') == 0 and 'history_k' in out.stderr


def test_unknown_method_is_one_line_error(tmp_path):
  out = _cli('unlearn', '--config=configs/demo.py', '--config.unlearn.method=magic', f'--workdir={tmp_path}')
  assert out.returncode == 1
  assert 'unknown method' in out.stderr and out.stderr.strip().count('\n') == 0

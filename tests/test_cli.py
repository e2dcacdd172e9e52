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
  assert "config.unlearn.method='magic': must be one of 'e2urec'" in out.stderr
  assert out.stderr.strip().count('\n') == 0


# Sixteen invalid values across fields, as a user types them: each must fail before any work.
INVALID = [
    ('train', '--config.train.mode=Full', 'config.train.mode', "'Full'", "one of 'full', 'lora'"),
    ('train', '--config.train.learning_rate=0', 'config.train.learning_rate', '0.0', '> 0'),
    ('train', '--config.train.batch_size=0', 'config.train.batch_size', '0', '>= 1'),
    ('train', '--config.train.batch_size=-8', 'config.train.batch_size', '-8', '>= 1'),
    ('augment', '--config.augment.mode=adapter', 'config.augment.mode', "'adapter'", "one of 'lora', 'full'"),
    ('augment', '--config.augment.batch_size=-1', 'config.augment.batch_size', '-1', '>= 1'),
    ('unlearn', '--config.unlearn.e2urec.batch_size=-16', 'config.unlearn.e2urec.batch_size', '-16', '>= 1'),
    ('unlearn', '--config.unlearn.e2urec.learning_rate=nan', 'config.unlearn.e2urec.learning_rate', 'nan',
     'finite'),
    ('unlearn', '--config.unlearn.method=magic', 'config.unlearn.method', "'magic'", "'e2urec', 'neggrad'"),
    ('run', '--config.unlearn.methods=e2urec,magic', 'config.unlearn.methods', "'e2urec,magic'", "'e2urec'"),
    ('run', '--config.unlearn.receraser.aggregate=median', 'config.unlearn.receraser.aggregate', "'median'",
     "one of 'attention', 'mean'"),
    ('run', '--config.sweep.ablations=no_teachers', 'config.sweep.ablations', "'no_teachers'",
     "'no_forget_teacher'"),
    ('prepare', '--config.data.forget_fraction=1.5', 'config.data.forget_fraction', '1.5', '< 1'),
    ('prepare', '--config.data.source=ml-10m', 'config.data.source', "'ml-10m'", "'ml-100k'"),
    ('retrain', '--config.lora.r=0', 'config.lora.r', '0', '>= 1'),
    ('run', '--config.eval.batch_size=0', 'config.eval.batch_size', '0', '>= 1'),
]


def test_invalid_values_fail_fast_with_one_line_and_leave_the_workdir_untouched(tmp_path):
  """Each exits 1 using under 5 s of CPU (its own, read with wait4: the machine may be busy),
  naming the field, the value and the choices; the workdir (an existing one with a file, or a
  new one) is left as it was. Four run at a time."""
  import concurrent.futures
  import os

  def check(i):
    command, flag, field, value, wants = INVALID[i]
    workdir = tmp_path / f'w{i}'
    if i % 2:
      workdir.mkdir()
      (workdir / 'keep.txt').write_text('untouched')
    with open(tmp_path / f'err{i}', 'w+') as err_file:
      p = subprocess.Popen([sys.executable, '-m', 'e2urec_jax', command, '--config=configs/demo.py', flag,
                            f'--workdir={workdir}'], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err_file)
      _, status, usage = os.wait4(p.pid, 0)
      err_file.seek(0)
      err = err_file.read().strip()
    assert os.waitstatus_to_exitcode(status) == 1, (flag, err)
    assert err.count('\n') == 0 and err.startswith(f'error: {field}={value}: must be ') and wants in err, (flag, err)
    assert usage.ru_utime + usage.ru_stime < 5, (flag, usage)
    if i % 2:
      assert [p.name for p in workdir.iterdir()] == ['keep.txt'] and (workdir / 'keep.txt').read_text() == 'untouched'
    else:
      assert not workdir.exists(), flag

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(check, range(len(INVALID))))


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path):
  """A run replaces its data/ folder whole: pointed at a project folder with its own data/, prepare
  deleted the user's files. Now such a folder is refused; a new, empty or prepared workdir is not."""
  import pytest
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  mine = tmp_path / 'project'
  (mine / 'data').mkdir(parents=True)
  (mine / 'data' / 'precious.csv').write_text('theirs')
  with pytest.raises(UserError, match="holds 'data' but no run of this tool"):
    commands._writable(str(mine))
  assert (mine / 'data' / 'precious.csv').read_text() == 'theirs'
  empty = tmp_path / 'empty'
  (empty / '.lock').parent.mkdir()
  (empty / '.lock').write_text('')  # hidden entries (the lock, temp folders) do not count
  for ok in (tmp_path / 'new', empty):
    commands._writable(str(ok))
  (mine / 'config.json').write_text('{}')  # a run's first published file: it is ours
  commands._writable(str(mine))


def test_one_invalid_value_fails_in_under_five_seconds(tmp_path):
  import time
  start = time.perf_counter()
  out = _cli('train', '--config=configs/demo.py', '--config.train.mode=Full', f'--workdir={tmp_path / "w"}')
  elapsed = time.perf_counter() - start
  assert out.returncode == 1 and out.stderr.strip().count('\n') == 0, out.stderr
  assert "config.train.mode='Full': must be one of 'full', 'lora'" in out.stderr
  assert elapsed < 5, elapsed
  assert not (tmp_path / 'w').exists()


def test_a_flag_of_another_command_is_refused(tmp_path):
  out = _cli('train', '--config=configs/demo.py', '--users=1,2', f'--workdir={tmp_path}')
  assert out.returncode == 2 and out.stderr.strip() == 'error: --users is not an option of train'


def test_a_seed_the_config_would_replace_is_refused(tmp_path):
  """configs/demo.py runs seeds 42, 43, 44: --config.seed=7 alone would be replaced by 42."""
  out = _cli('run', '--config=configs/demo.py', '--config.seed=7', f'--workdir={tmp_path / "w"}')
  assert out.returncode == 1 and out.stderr.strip().count('\n') == 0
  assert '--config.seeds=7' in out.stderr
  assert not (tmp_path / 'w').exists()


def test_prepare_on_a_prepared_workdir_says_it_has_nothing_to_do(tmp_path, capsys):
  """It printed nothing: a user could not tell whether anything happened."""
  import os
  from conftest import load_config
  from e2urec_jax import commands
  config = load_config('configs/demo.py:test')
  config.progress = False
  work = str(tmp_path / 'w')
  commands.prepare(config, work)
  assert 'prepared synthetic' in capsys.readouterr().out
  manifest = os.path.join(work, 'data', 'manifest.json')
  before = os.path.getmtime(manifest)
  commands.prepare(config, work)
  out = capsys.readouterr().out
  assert 'is already prepared with these settings (train 1200 / valid 400 / test 400 samples); nothing to do' in out
  assert '--restart=data' in out and os.path.getmtime(manifest) == before
  commands.prepare(config, work, restart='data')  # prepared again: not called "nothing to do"
  assert 'nothing to do' not in capsys.readouterr().out

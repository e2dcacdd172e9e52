"""One line instead of a traceback, and limits checked before any work: what a new user met trying
the command line (a full or read-only disk, a forget key that is a folder or gone, an unwritable
compilation cache, a config file that is missing or broken, a batch larger than the data, ids
megabytes long). Disk faults are simulated (the tests may run as root, for whom chmod does not
make a folder read-only): a patched os.open / os.write / shutil.copyfile that fails the way the
kernel does, or orbax's own serialisation failing as tensorstore does on a full disk.

Elsewhere: tests/test_forget_ids.py (ids Python's int() cannot read), tests/test_peft_format.py
(random bytes and non-finite weights in lora.init_from's adapter file).
"""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import CACHE, REPO, load_config
from e2urec_jax.errors import UserError


def _one_line(e) -> str:
  message = str(e.value if hasattr(e, 'value') else e)
  assert '\n' not in message and len(message) < 600, message[:2000]
  return message


def _fake_run(root) -> str:
  """A workdir as far as the commands' first checks see: prepared data, a trained original and
  retrained model (folders), no file the checks read beyond those."""
  work = root / 'w'
  for folder in ('data', 'models/original', 'models/retrain', 'phases/original'):
    (work / folder).mkdir(parents=True)
  (work / 'data' / 'manifest.json').write_text('{}')
  (work / 'phases' / 'original' / 'done.json').write_text('{}')
  return str(work)


def _config():
  config = load_config('configs/demo.py:test')
  config.seeds, config.progress = '42', False
  return config


# ------------------------------------------------------------------ a full disk
def test_a_copy_that_fills_the_disk_is_one_line(tmp_path, monkeypatch):
  """forget's data cleaning copies the data folder with shutil.copytree inside atomic_dir: a full disk
  there raised shutil.Error (an OSError without errno, listing the failed files) as a traceback."""
  from e2urec_jax import runtime
  src = tmp_path / 'data'
  (src / 'tokens').mkdir(parents=True)
  (src / 'train.parquet').write_bytes(b'rows')
  (src / 'tokens' / 'train.arrow').write_bytes(b'tokens')
  copy = shutil.copyfile

  def full(a, b, *args, **kwargs):
    if os.fspath(a).endswith('.arrow'):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(b))
    return copy(a, b, *args, **kwargs)

  monkeypatch.setattr(shutil, 'copyfile', full)
  with pytest.raises(UserError) as e:
    with runtime.atomic_dir(str(tmp_path / 'scrubbed')) as tmp:
      shutil.copytree(src, os.path.join(tmp, 'copy'))
  assert _one_line(e).startswith(f'writing {tmp_path / "scrubbed"} failed: No space left on device; free disk space')
  assert sorted(os.listdir(tmp_path)) == ['data']  # no temp folder, no half-copied result


@pytest.mark.parametrize('command', ['evaluate', 'run', 'forget'])
def test_no_space_for_the_lock_is_one_line_and_leaves_no_lock(command, tmp_path, monkeypatch):
  """0 bytes free: creating the empty lock file works, writing its holder fails; that was an OSError
  traceback from workdir_lock.hold that left an empty .lock in the workdir."""
  from e2urec_jax import commands
  work = _fake_run(tmp_path)
  before = sorted(os.listdir(work))
  write = os.write

  def full(fd, data):
    if bytes(data).startswith(b'{"pid"'):  # the lock's holder record
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write(fd, data)

  monkeypatch.setattr(os, 'write', full)
  kwargs = {'users': '1', 'forget_key': str(tmp_path / 'key')} if command == 'forget' else {}
  with pytest.raises(UserError) as e:
    getattr(commands, command)(_config(), work, **kwargs)
  message = _one_line(e)
  assert message.startswith(f'writing the lock file {work}/.lock failed: No space left on device; free disk space'), \
      message
  assert sorted(os.listdir(work)) == before  # no .lock left behind
  (tmp_path / 'w' / '.lock').write_text('')  # a lock file an earlier command left stays
  with pytest.raises(UserError, match='No space left on device'):
    getattr(commands, command)(_config(), work, **kwargs)
  assert (tmp_path / 'w' / '.lock').exists()


def test_orbax_messages_of_a_failed_save_go_to_a_log_file(tmp_path, monkeypatch, capfd):
  """tensorstore's ENOSPC inside orbax's serialisation thread: orbax logs a traceback per array (759
  lines for `train`), which buried the one-line error; now they go to phases/<phase>/checkpoint_errors.log,
  which the line names, and the screen gets the line alone."""
  from orbax.checkpoint._src.serialization import serialization
  from test_reliability_input import _toy_phase
  real = serialization.async_serialize_from_host
  calls = []

  async def full_at_second_save(*args, **kwargs):
    calls.append(1)
    if len(calls) > 2:  # step 4's save (its two arrays) works; step 8's fails as tensorstore does
      raise ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file: Failed to write '
                       "12 bytes to file 9: No space left on device [os_error_code='28']")
    return await real(*args, **kwargs)

  monkeypatch.setattr(serialization, 'async_serialize_from_host', full_at_second_save)
  capfd.readouterr()
  with pytest.raises(UserError) as e:
    _toy_phase(tmp_path, 12)
  log = tmp_path / 'checkpoint_errors.log'
  message = _one_line(e)
  assert message.startswith('checkpoint save at step 8 failed in ') and 'No space left on device' in message
  assert message.endswith(f'(the previous checkpoint, step 4, is intact); orbax\'s 2 message(s) are in {log}'), message
  out, err = capfd.readouterr()
  assert 'Traceback' not in out + err and 'RESOURCE_EXHAUSTED' not in out + err, err[-3000:]
  text = log.read_text()
  assert text.startswith('--- ') and 'checkpoint save at step 8: 2 message(s) of orbax' in text
  assert text.count('Traceback (most recent call last)') >= 2 and "os_error_code='28'" in text


def test_a_save_that_works_shows_what_orbax_logged(tmp_path, caplog):
  """The messages are held only while a save runs: those of a save that works are shown as before."""
  import logging
  from e2urec_jax.train.checkpoint import HeldMessages
  with HeldMessages() as held:
    logging.getLogger('absl').warning('orbax says %s', 'hello')
  assert not [r for r in caplog.records if 'orbax says' in r.getMessage()]
  held.replay()
  assert [r.getMessage() for r in caplog.records if 'orbax says' in r.getMessage()] == ['orbax says hello']
  assert not (tmp_path / 'checkpoint_errors.log').exists()


# ------------------------------------------------------------------ a read-only workdir
def test_a_read_only_workdir_is_the_same_line_for_every_command(tmp_path, monkeypatch):
  """forget and evaluate raised OSError [Errno 30] on <workdir>/.lock; train's line is every command's."""
  from e2urec_jax import commands
  work = _fake_run(tmp_path)
  (tmp_path / 'w' / 'config.json').write_text('{}')
  real = os.open

  def read_only(path, flags, *args, **kwargs):
    if str(path).startswith(work) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return real(path, flags, *args, **kwargs)

  monkeypatch.setattr(os, 'open', read_only)
  lines = {}
  for command in ('train', 'evaluate', 'forget'):
    kwargs = {'users': '1', 'forget_key': str(tmp_path / 'key')} if command == 'forget' else {}
    try:
      getattr(commands, command)(_config(), work, **kwargs)
    except (UserError, OSError) as e:
      lines[command] = f'{type(e).__name__}: {e}'
  want = f"UserError: workdir '{work}' is not writable (Read-only file system); pass a --workdir you can write to"
  assert lines == {'train': want, 'evaluate': want, 'forget': want}


# ------------------------------------------------------------------ the forget key
def test_a_forget_key_that_is_a_folder_is_one_line(tmp_path):
  from e2urec_jax import commands
  work = _fake_run(tmp_path)
  folder = tmp_path / 'keys'
  folder.mkdir()
  with pytest.raises(UserError) as e:
    commands.forget(_config(), work, users='1', forget_key=str(folder))
  assert _one_line(e).startswith(f'--forget_key={folder} is a folder; pass the key file itself (e.g. '
                                 f'--forget_key={folder}/forget.key')


def test_a_missing_key_on_a_workdir_with_audits_is_named_missing(tmp_path):
  """It said the key was not the one audit v1 was written with, showing the id of a fresh random key
  it never saved."""
  from e2urec_jax import commands
  work = _fake_run(tmp_path)
  (tmp_path / 'w' / 'forget').mkdir()
  (tmp_path / 'w' / 'forget' / 'audit_v1.json').write_text(json.dumps({'version': 1, 'request': {}, 'subjects': {'key_id': '0123456789abcdef'}}))
  gone = tmp_path / 'nonexistent' / 'k'
  with pytest.raises(UserError) as e:
    commands.forget(_config(), work, users='1', forget_key=str(gone))
  message = _one_line(e)
  assert message.startswith(f'--forget_key={gone}: no such file; pass the key file the forget requests'), message
  assert 'key id' not in message and not gone.parent.exists()


# ------------------------------------------------------------------ the compilation cache
@pytest.mark.parametrize('where', ['/proc/nope', '~/.cache/e2urec_jax/xla'])
def test_an_unwritable_compilation_cache_is_a_warning_and_the_run_goes_on(where, monkeypatch, capsys):
  """--config.jax_cache_dir=/proc/nope, or HOME=/proc with the default: FileNotFoundError from
  runtime.setup before, for every command (predict included). The cache only saves compile time,
  so the command runs without it and says so."""
  import jax
  from e2urec_jax import runtime
  monkeypatch.setenv('HOME', '/proc')
  before = jax.config.jax_compilation_cache_dir
  runtime.setup(jax_cache_dir=where)
  err = capsys.readouterr().err
  folder = os.path.expanduser(where)
  assert err.startswith(f'warning: the compilation cache folder {folder} cannot be written (') and err.count('\n') == 1
  assert 'running without it' in err and "--config.jax_cache_dir=''" in err
  assert jax.config.jax_compilation_cache_dir == before


# ------------------------------------------------------------------ config files
def _cli(args, cwd=REPO):
  return subprocess.Popen([sys.executable, '-m', 'e2urec_jax', *args], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, JAX_PLATFORMS='cpu'))


BAD_SAVED = {  # config.json as found in a workdir -> words of the one line
    'truncated': ('{"seed": 42, "train": {"epo', 'is not valid JSON'),
    'a section as a number': ('{"train": 5}', "config key 'train' holds int 5 where a section"),
    'a word for a number': ('{"train": {"epochs": "abc"}}', "config key 'train.epochs' holds str 'abc' where int"),
    'a list': ('[1, 2]', 'the file holds list [1, 2] where a section'),
}


def test_config_files_that_cannot_be_read_are_one_line(tmp_path):
  """A --config file that is not there (two OSError tracebacks naming "config_config"), a --config.*
  override without --config ("Unknown command line flag"), and a workdir's damaged config.json
  (JSONDecodeError, AttributeError, TypeError): one line each, naming the file or flag, and nothing
  created. Parsing fails before JAX loads: all run at once, about a second each."""
  cases = {'no file': (['train', '--config=configs/nosuch.py'], 2,
                       '--config=configs/nosuch.py: no such file', 'pass a config file such as configs/demo.py'),
           'no --config': (['train', '--config.train.epochs=abc'], 2,
                           "--config.train.epochs=abc overrides a field of a config file, but no --config=FILE",
                           'pass one before it'),
           'override first': (['train', '--config.train.epochs=2', '--config=configs/demo.py'], 2,
                              '--config.train.epochs=2 comes before --config=configs/demo.py',
                              'put --config=FILE first')}
  for name, (text, words) in BAD_SAVED.items():
    work = tmp_path / name.replace(' ', '_')
    work.mkdir()
    (work / 'config.json').write_text(text)
    cases[name] = (['evaluate'], 1, f'{work}/config.json', words)
  procs = {}
  for name, (args, _, _, _) in cases.items():
    work = tmp_path / name.replace(' ', '_')
    procs[name] = _cli([*args, f'--workdir={work}'])
  for name, p in procs.items():
    out, err = p.communicate(timeout=120)
    _, code, *words = cases[name]
    assert p.returncode == code and err.count('\n') == 1 and err.startswith('error: '), (name, err[-3000:])
    for word in words:
      assert word in err, (name, word, err)
    work = tmp_path / name.replace(' ', '_')
    assert not work.exists() or sorted(os.listdir(work)) == ['config.json'], name


def test_a_damaged_saved_config_names_the_file_in_process(tmp_path):
  from e2urec_jax import config as config_lib
  for name, (text, words) in BAD_SAVED.items():
    (tmp_path / 'config.json').write_text(text)
    with pytest.raises(UserError) as e:
      config_lib.load_saved(str(tmp_path))
    message = _one_line(e)
    assert message.startswith(f'{tmp_path}/config.json') and words in message, (name, message)
    assert 'pass --config=FILE' in message


# ------------------------------------------------------------------ batches larger than the data
def test_batches_larger_than_the_data_are_cut_to_it_with_a_line():
  """--config.train.batch_size=1000000000 was accepted and built that many rows until the kernel
  killed the process, without a word. Every phase's batch: at most the train split (rounded down
  to the data-parallel devices), the evaluation's at most the largest split."""
  from e2urec_jax.train import sampling
  config = _config()
  config.train.batch_size = 1_000_000_000
  config.augment.batch_size = 1203  # the whole split: fits
  config.unlearn.e2urec.batch_size = 5000
  config.unlearn.neggrad.batch_size = 16  # fits: untouched
  config.eval.batch_size = 10**9
  lines = sampling.fit_batch_sizes(config, {'train': 1203, 'valid': 400, 'test': 401}, data_shards=8)
  assert lines == ['config.train.batch_size=1000000000 is more than the 1203 samples of the train split: using 1200',
                   'config.unlearn.e2urec.batch_size=5000 is more than the 1203 samples of the train split: using 1200',
                   'config.eval.batch_size=1000000000 is more than the 1203 samples of the largest split: using 1200']
  assert (config.train.batch_size, config.augment.batch_size, config.unlearn.e2urec.batch_size,
          config.unlearn.neggrad.batch_size, config.eval.batch_size) == (1200, 1203, 1200, 16, 1200)
  assert sampling.fit_batch_sizes(config, {'train': 1203, 'valid': 400, 'test': 401}, data_shards=8) == []


@pytest.mark.slow
def test_train_with_a_huge_batch_trains_on_the_whole_split(tmp_path, capsys):
  """The command a user typed, in process: one line, then one step per epoch over the 360 train samples.
  (400, not 1,000,000,000: the code before this change would build a batch that size.)"""
  from conftest import tiny_run_config
  from e2urec_jax import commands
  config = tiny_run_config('e2urec')
  config.train.batch_size = 400
  config.train.epochs, config.train.max_steps = 2, 0
  commands.train(config, str(tmp_path / 'w'))
  out = capsys.readouterr().out
  assert 'config.train.batch_size=400 is more than the 360 samples of the train split: using 360' in out
  assert 'original: 2 steps in' in out
  saved = json.loads((tmp_path / 'w' / 'config.json').read_text())
  assert saved['train']['batch_size'] == 360


# ------------------------------------------------------------------ ids echoed in errors
HUGE = '7' * 2_500_000


def _pairs(tmp_path, text) -> str:
  path = tmp_path / 'pairs.csv'
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize('case', ['three fields', 'empty item', 'no such --users file', 'an id with a space',
                                  'no such --input'])
def test_ids_megabytes_long_are_cut_in_every_message(case, tmp_path):
  """A 2.5 MB id was echoed whole (a 2.5 MB error line) where a message quoted the line or the argument."""
  from e2urec_jax.data import idfiles
  calls = {
      'three fields': lambda: idfiles.read_pairs(_pairs(tmp_path, f'1,2,{HUGE}\n'), '--input'),
      'empty item': lambda: idfiles.read_pairs(_pairs(tmp_path, f'user_id,item_id\n{HUGE},\n'), '--input'),
      'no such --users file': lambda: idfiles.read_user_ids(f'/nonexistent/{HUGE}'),
      'an id with a space': lambda: idfiles.read_user_ids(_pairs(tmp_path, f'{HUGE} 1\n')),
      'no such --input': lambda: idfiles.read_pairs(f'/nonexistent/{HUGE}', '--input'),
  }
  with pytest.raises(UserError) as e:
    calls[case]()
  message = _one_line(e)
  assert len(message) < 300 and "'... (2500" in message and ' characters)' in message, message

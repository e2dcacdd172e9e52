"""Issue 19's points, each checked without training: config fingerprints and --restart, the data
rules, the prompt budget, artifact stamps, read-only commands, the workdir lock, input files
with line numbers, the forget key, and the umask. End-to-end checks (signals, repairs of a real
run, the forget requests) are the slow tests at the end and in test_forget.py.
"""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import CACHE, REPO, load_config
from e2urec_jax.errors import UserError


# ------------------------------------------------------------------ 1. fingerprints and --restart
def _fake_phase(paths, name, rec, *, model=True):
  """A finished phase as `runner.done` leaves it: its fingerprint, done.json, a model folder."""
  from e2urec_jax.train import fingerprint
  os.makedirs(paths.phase_dir(name), exist_ok=True)
  fingerprint.write(paths.phase_dir(name), rec)
  with open(os.path.join(paths.phase_dir(name), 'done.json'), 'w') as f:
    json.dump({'steps': 1}, f)
  if model:
    os.makedirs(paths.model_dir(name), exist_ok=True)
    open(os.path.join(paths.model_dir(name), 'config.json'), 'w').write('{}')


def _trained_workdir(tmp_path, config, names=('original', 'augmented', 'e2urec')):
  from e2urec_jax import resume
  from e2urec_jax.train import paths as paths_lib
  paths = paths_lib.run_paths(str(tmp_path / 'work'))
  phases = {p.name: p for p in resume.plan(config, 'run')}
  for name in names:
    _fake_phase(paths, name, resume.phase_record(config, phases[name], 'digest'))
  return paths


def test_a_rerun_with_another_batch_size_is_refused_naming_the_field(tmp_path):
  from e2urec_jax import resume
  config = load_config('configs/demo.py:test')
  config.model.name_or_path = '/nowhere'  # no pretrained phase in the plan: the three phases below only
  paths = _trained_workdir(tmp_path, config)
  plan = [p for p in resume.plan(config, 'run') if p.name in ('original', 'augmented', 'e2urec')]
  resume.check_phases(config, paths, plan, 'digest')  # the same config: reused, nothing said
  changed = config.copy_and_resolve_references()
  changed.train.batch_size = 16
  with pytest.raises(UserError) as e:
    resume.check_phases(changed, paths, plan, 'digest')
  line = str(e.value)
  assert '\n' not in line and 'train.batch_size 32 -> 16' in line and '--restart=changed' in line
  assert 'phases affected: original,augmented,e2urec' in line and 'new --workdir' in line
  unrelated = config.copy_and_resolve_references()  # what no phase reads never invalidates one
  unrelated.eval.batch_size, unrelated.progress, unrelated.checkpoint.every_steps = 7, True, 3
  resume.check_phases(unrelated, paths, plan, 'digest')
  with pytest.raises(UserError, match='phases affected: original'):  # the data the phases were trained on
    resume.check_phases(config, paths, plan, 'another digest')


def test_restart_trains_exactly_the_changed_phases_and_those_built_on_them(tmp_path):
  from e2urec_jax import resume
  config = load_config('configs/demo.py:test')
  config.model.name_or_path = '/nowhere'
  paths = _trained_workdir(tmp_path, config)
  plan = [p for p in resume.plan(config, 'run') if p.name in ('original', 'augmented', 'e2urec')]
  changed = config.copy_and_resolve_references()
  changed.augment.steps = 5  # the augmented model, and E2URec (it reads augment.*), not the original
  with pytest.raises(UserError, match=r'augment\.steps .* phases affected: augmented,e2urec\.'):
    resume.check_phases(changed, paths, plan, 'digest')
  resume.check_phases(changed, paths, plan, 'digest', restart=('changed',))
  assert os.path.exists(paths.model_dir('original'))
  assert not os.path.exists(paths.model_dir('augmented')) and not os.path.exists(paths.phase_dir('e2urec'))
  _trained_workdir(tmp_path, config)
  resume.check_phases(config, paths, plan, 'digest', restart=('original',))  # named: it and all built on it
  assert not any(os.path.exists(paths.phase_dir(n)) for n in ('original', 'augmented', 'e2urec'))
  with pytest.raises(UserError, match="'orignal' is not a phase of this command"):
    resume.check_phases(config, paths, plan, 'digest', restart=('orignal',))


def test_a_workdir_from_before_fingerprints_is_refused_with_the_same_choices(tmp_path):
  from e2urec_jax import resume
  from e2urec_jax.train import fingerprint
  config = load_config('configs/demo.py:test')
  config.model.name_or_path = '/nowhere'
  paths = _trained_workdir(tmp_path, config, names=('original',))
  os.remove(os.path.join(paths.phase_dir('original'), fingerprint.FILE))
  plan = [p for p in resume.plan(config, 'train') if p.name == 'original']
  with pytest.raises(UserError, match='original written before fingerprints existed .* --restart=changed'):
    resume.check_phases(config, paths, plan, 'digest')


def test_a_lora_rank_change_retrains_only_the_phases_that_train_adapters(tmp_path):
  """A full-parameter original does not read lora.*: a rank sweep of E2URec retrains E2URec, not the
  original and its retrains (it did); an original trained as LoRA, or a LoRA augmented model, does."""
  from e2urec_jax import resume
  from e2urec_jax.train import fingerprint
  config = load_config('configs/demo.py:test')
  config.model.name_or_path = '/nowhere'
  names = ('original', 'augmented', 'e2urec', 'neggrad')

  def affected(base, change):
    paths = _trained_workdir(tmp_path / f'{base.train.mode}-{base.augment.mode}', base, names=names)
    plan = [p for p in resume.plan(base, 'run') if p.name in names]
    changed = base.copy_and_resolve_references()
    change(changed)
    with pytest.raises(UserError) as e:
      resume.check_phases(changed, paths, plan, 'digest')
    return re.search(r'phases affected: ([a-z0-9_,]+)\.', str(e.value)).group(1), str(e.value)

  def rank(c):
    c.lora.r, c.lora.alpha = 4, 8.0
  phases, line = affected(config, rank)
  assert phases == 'e2urec' and 'lora.r 16 -> 4' in line
  lora_aug = config.copy_and_resolve_references()
  lora_aug.augment.mode = 'lora'
  assert affected(lora_aug, rank)[0] == 'augmented,e2urec'
  lora_train = config.copy_and_resolve_references()
  lora_train.train.mode = 'lora'
  assert affected(lora_train, rank)[0] == 'original,augmented,e2urec,neggrad'
  # A full-parameter phase recorded with lora.* (before they stopped being read) is reused as it is.
  phase = next(p for p in resume.plan(config, 'run') if p.name == 'original')
  want = resume.phase_record(config, phase, 'digest')
  old = fingerprint.record({**want['fields'], 'lora.r': 8, 'lora.dropout': 0.1}, want['inputs'])
  assert fingerprint.check(old, True, want) == (fingerprint.SAME, [])
  newer = fingerprint.record({**want['fields'], 'train.epochs': 99}, want['inputs'])
  assert fingerprint.check(newer, True, want) == (fingerprint.CHANGED, ['train.epochs'])


# ------------------------------------------------------------------ 2. the data rules
def _csv(tmp_path, text, **data):
  from e2urec_jax.config import default_config
  from e2urec_jax.data import readers
  (tmp_path / 'r.csv').write_text(text)
  c = default_config()
  c.data.source, c.data.raw_dir, c.data.csv.ratings = 'csv', str(tmp_path), 'r.csv'
  for k, v in data.items():
    c.data[k] = v
  return readers.read_source(c, str(tmp_path / 'scratch'))


HEAD = 'user_id,item_id,rating,timestamp\n'


def test_ratings_outside_the_scale_are_refused_with_their_line(tmp_path):
  for bad in ('0', '10', '-3'):
    with pytest.raises(UserError, match=rf'r\.csv line 3: rating {bad} is outside the rating scale 1-5'):
      _csv(tmp_path, HEAD + f'1,2,4,100\n1,3,{bad},200\n')
  raw = _csv(tmp_path, HEAD + '1,2,4,100\n1,3,10,200\n', rating_scale=(1, 10), label_threshold=6.0)
  assert raw.rating_scale == 10  # the prompt says "(out of 10 stars)" only when declared
  with pytest.raises(UserError, match='label_threshold=3 is outside the rating scale 5-10'):
    _csv(tmp_path, HEAD + '1,2,6,100\n', rating_scale=(5, 10))


def test_duplicate_pairs_keep_the_latest_with_a_count_or_are_refused(tmp_path, capsys):
  text = HEAD + '1,2,4,300\n1,2,1,100\n1,3,5,200\n1,2,2,200\n'
  raw = _csv(tmp_path, text)
  assert sorted(zip(raw.ratings['item'], raw.ratings['rating'])) == [(2, 4.0), (3, 5.0)]  # timestamp 300 wins
  assert 'note: 2 rating(s) repeated a (user, item) pair' in capsys.readouterr().out
  with pytest.raises(UserError, match=r"lines 2 and 3 and 5: user '1' rated item '2' more than once"):
    _csv(tmp_path, text, duplicates='error')


def test_ids_stay_as_spelled_and_empty_tables_are_one_line(tmp_path):
  frame = pd.DataFrame({'user_id': [13.0, 14.0], 'item_id': [2.0, 3.0], 'rating': [4, 5], 'timestamp': [1, 2]})
  frame.to_parquet(tmp_path / 'r.parquet')
  from e2urec_jax.config import default_config
  from e2urec_jax.data import tabular
  c = default_config().data.csv
  c.ratings = str(tmp_path / 'r.parquet')
  raw = tabular.read_tabular(c)
  assert sorted(raw.users['key']) == ['13', '14'] and sorted(raw.items['key']) == ['2', '3']
  for text, needle in (('', 'r.csv is empty'), (HEAD, 'r.csv has a header but no rows'),
                       ('\n\n', 'holds no table')):
    with pytest.raises(UserError, match=needle) as e:
      _csv(tmp_path, text)
    assert '\n' not in str(e.value)


def test_the_usage_page_names_the_default_columns():
  from e2urec_jax.config import default_config
  c = default_config().data.csv
  readme = open(os.path.join(REPO, 'docs', 'USAGE.md')).read()
  for col in (c.user_col, c.item_col, c.rating_col, c.time_col):
    assert f'`{col}`' in readme


# ------------------------------------------------------------------ 3. the prompt budget
def test_the_prompt_budget_refuses_a_history_that_does_not_fit():
  from e2urec_jax.data import encode
  shown, available = np.array([0] * 8 + [1, 1]), np.ones(10, int)
  full = np.array([70] * 8 + [50, 50])
  with pytest.raises(UserError) as e:
    encode.check_budget(shown, available, full, max_len=64, history_k=1, max_share=0.05)
  line = str(e.value)
  assert 'in 8 of 10 prompts (80%' in line and 'need up to 70 tokens' in line
  assert '--config.data.max_input_length=70' in line and '--config.data.history_k=0 fits' in line
  assert encode.check_budget(shown, available, full, max_len=64, history_k=1, max_share=0.8)['shortened'] == 8


def test_the_prompt_budget_counts_profile_cuts_without_history():
  # history_k=0: a prompt longer than the budget loses profile words, and that counts as shortened.
  from e2urec_jax.data import encode
  shown, available, full = np.zeros(10, int), np.zeros(10, int), np.array([70] * 3 + [50] * 7)
  assert encode.check_budget(shown, available, full, max_len=64, history_k=0, max_share=0.5)['shortened'] == 3
  with pytest.raises(UserError, match='in 3 of 10 prompts'):
    encode.check_budget(shown, available, full, max_len=64, history_k=0, max_share=0.05)


def test_the_demo_keeps_the_default_prompt_budget():
  """The demo shows no history (history_k=0: one item never fitted 64 tokens); it does not opt out of
  the check (its preparation passes it: every slow end-to-end test prepares it)."""
  from e2urec_jax import config as config_lib
  from e2urec_jax.config import default_config
  for arg in ('', 'test'):
    c = load_config(f'configs/demo.py:{arg}' if arg else 'configs/demo.py')
    config_lib.validate(c)
    assert c.data.history_k == 0 and c.data.max_shortened == default_config().data.max_shortened


# ------------------------------------------------------------------ 4. artifacts checked against their stamps
def test_a_damaged_artifact_is_named_with_what_to_rerun(tmp_path):
  from e2urec_jax import stamps
  from e2urec_jax.train import artifacts
  model = tmp_path / 'work' / 'models' / 'original'
  model.mkdir(parents=True)
  (model / 'model.safetensors').write_bytes(b'x' * 100)
  (model / 'config.json').write_text('{}')
  stamps.write(str(model))
  artifacts.verify(str(model))
  (model / 'model.safetensors').write_bytes(b'x' * 50)  # truncated
  with pytest.raises(stamps.Corrupt, match=r'model\.safetensors is corrupt: 50 bytes where 100 were written; '
                                           r'rerun `run` on this workdir: it trains phase original again'):
    artifacts.verify(str(model))
  (model / 'model.safetensors').write_bytes(b'y' * 100)  # overwritten, same size
  with pytest.raises(stamps.Corrupt, match='its sha256 differs'):
    artifacts.verify(str(model))
  assert 'forget version' in artifacts.rerun_hint(str(tmp_path / 'work' / 'models' / 'forget_v2'))


# ------------------------------------------------------------------ 5. read-only commands create nothing
def test_read_only_commands_never_create_a_workdir(tmp_path):
  from e2urec_jax import commands
  config = load_config('configs/demo.py:test')
  missing = tmp_path / 'misspelled'
  pairs = tmp_path / 'pairs.csv'
  pairs.write_text('user_id,item_id\n1,2\n')
  for call in (lambda: commands.evaluate(config, str(missing)),
               lambda: commands.predict(config, str(missing), input=str(pairs)),
               lambda: commands.export(config, str(missing), output=str(tmp_path / 'hf'))):
    with pytest.raises(UserError, match='creates nothing; check --workdir'):
      call()
  assert not missing.exists() and not (tmp_path / 'hf').exists()
  missing.mkdir()
  with pytest.raises(UserError, match='holds no prepared run'):
    commands.evaluate(config, str(missing))
  assert os.listdir(missing) == []


# ------------------------------------------------------------------ 6. one writer per workdir
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
  from e2urec_jax import commands, workdir_lock
  work = str(tmp_path)
  with workdir_lock.hold(work, 'run', primary=True):
    with pytest.raises(UserError, match=rf'in use by `run` \(pid {os.getpid()} on .*\): one command writes'):
      with workdir_lock.hold(work, 'run', primary=True):
        pass
    with pytest.raises(UserError, match='in use by `run`'):  # before any work: nothing prepared
      commands.run(load_config('configs/demo.py:test'), work)
    assert sorted(os.listdir(work)) == [workdir_lock.LOCK_FILE]
  with workdir_lock.hold(work, 'train', primary=True):  # released with its holder (the kernel's flock)
    pass
  with open(os.path.join(work, workdir_lock.LOCK_FILE), 'w') as f:  # a file left by a holder that died
    json.dump({'pid': 999999999, 'host': 'elsewhere', 'command': 'run'}, f)
  with workdir_lock.hold(work, 'run', primary=True):
    pass
  with workdir_lock.hold(work, 'run', primary=False):  # another process of a multi-host run: no lock taken
    with workdir_lock.hold(work, 'run', primary=True):
      pass


def test_without_flock_the_file_is_the_lock_and_a_dead_holder_is_stale(tmp_path, monkeypatch):
  import socket
  from e2urec_jax import workdir_lock
  work, path = str(tmp_path), os.path.join(str(tmp_path), workdir_lock.LOCK_FILE)
  with open(path, 'w') as f:
    json.dump({'pid': 999999999, 'host': socket.gethostname(), 'command': 'run'}, f)
  with workdir_lock._exclusive_file(work, path, 'run'):  # a dead holder on this host: taken over
    with pytest.raises(UserError, match='in use by `run`'):
      with workdir_lock._exclusive_file(work, path, 'train'):
        pass
  assert not os.path.exists(path)
  with open(path, 'w') as f:  # a holder on another host is never presumed dead
    json.dump({'pid': 1, 'host': 'other-host', 'command': 'forget'}, f)
  with pytest.raises(UserError, match='in use by `forget` \\(pid 1 on other-host'):
    with workdir_lock._exclusive_file(work, path, 'run'):
      pass


# ------------------------------------------------------------------ 8. input files: line-numbered, one line
def test_predict_and_forget_inputs_are_line_numbered_one_line_errors(tmp_path):
  from e2urec_jax.data import idfiles
  from e2urec_jax.eval.predict import read_pairs
  f = tmp_path / 'pairs.csv'
  cases = (('', 'pairs.csv is empty'), ('user_id,item_id\n', 'has a header but no pairs'),
           ('user_id,item_id\n1,2\n3,4,5\n', 'pairs.csv line 3: expected user_id,item_id (2 fields), found 3'),
           ('user_id,item_id\n\n1,\n', 'pairs.csv line 3: empty item_id'),
           ('user,sku,when\n1,2,3\n', "line 1: the header 'user,sku,when' names no user_id and no item_id"),
           (b'1,2\n\xff\xfe,3\n', 'pairs.csv line 2: not UTF-8 text'))
  for text, needle in cases:
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=re.escape(needle)) as e:
      read_pairs(str(f))
    assert '\n' not in str(e.value)
  f.write_text('\ufeffuser_id,item_id,score\n# a comment\n013,2,0.5\n')
  pairs = read_pairs(str(f))
  assert pairs['user_id'].tolist() == ['013'] and pairs['line'].tolist() == [3]  # ids as spelled
  with pytest.raises(UserError, match='line 1: .a b. is not one user id'):
    f.write_text('a b\n')
    idfiles.read_user_ids(str(f))


def test_predict_output_is_checked_before_scoring(tmp_path):
  from e2urec_jax import commands
  work, pairs = tmp_path / 'run', tmp_path / 'pairs.csv'
  work.mkdir()
  pairs.write_text('1,2\n')
  for output, needle in ((work / 'results.json', 'is inside the workdir'), (pairs, 'is the --input file'),
                         (tmp_path, 'is a folder; pass a file name'), (tmp_path / 'no' / 'p.csv', 'no folder')):
    with pytest.raises(UserError, match=needle) as e:
      commands._check_predict_output(str(output), str(pairs), str(work))
    assert '\n' not in str(e.value)
  commands._check_predict_output(str(tmp_path / 'p.csv'), str(pairs), str(work))


# ------------------------------------------------------------------ 9. the forget key
def test_the_forget_key_lives_outside_the_workdir_and_opens_the_audits(tmp_path):
  from e2urec_jax import forget_audit
  work = tmp_path / 'work'
  (work / 'forget').mkdir(parents=True)
  with pytest.raises(UserError, match='is inside the workdir'):
    forget_audit.read_key(str(work / 'k'), str(work), create=True, command='forget')
  with pytest.raises(UserError, match='needs the forget key'):
    forget_audit.read_key(None, str(work), create=True, command='forget')
  key_file = tmp_path / 'ops' / 'forget.key'
  key = forget_audit.read_key(str(key_file), str(work), create=True, command='forget')
  assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and len(key) == 64
  audit = {'version': 1, 'request': 'users',
           'subjects': {'scheme': forget_audit.SCHEME, 'key_id': forget_audit.key_id(key),
                        'users': [forget_audit.keyed(key, '196')], 'pairs': []}}
  assert forget_audit.forgotten_by({1: audit}, key, '196') == 1
  assert forget_audit.forgotten_by({1: audit}, key, '197') is None
  assert forget_audit.forgotten_by({1: audit}, b'another key of 32 bytes, at least', '196') is None
  pairs = pd.DataFrame({'user_id': ['5', '196'], 'item_id': ['1', '2'], 'line': [2, 3]})
  forget_audit.runtime.write_json(str(work / 'forget' / 'audit_v1.json'), audit)
  with pytest.raises(UserError, match='needs the key'):
    forget_audit.refuse_forgotten(str(work), pairs, key_file=None, allow=False)
  with pytest.raises(UserError, match="line 3: user '196' was forgotten by forget request v1"):
    forget_audit.refuse_forgotten(str(work), pairs, key_file=str(key_file), allow=False)
  forget_audit.refuse_forgotten(str(work), pairs, key_file=None, allow=True)
  other = tmp_path / 'other.key'
  other.write_text('f' * 64)
  with pytest.raises(UserError, match='is not the key audit v1 was written with'):
    forget_audit.refuse_forgotten(str(work), pairs, key_file=str(other), allow=False)
  (work / 'forget' / 'salt.key').write_text('0' * 64)  # a workdir from before keyed hashes
  with pytest.raises(UserError, match='move that file out of the workdir'):
    forget_audit.refuse_forgotten(str(work), pairs, key_file=str(key_file), allow=False)


# ------------------------------------------------------------------ 10. permissions follow the umask
def test_adapters_and_models_follow_the_umask(tmp_path):
  from e2urec_jax import local_files
  from e2urec_jax.train import artifacts
  base = tmp_path / 'base'
  base.mkdir()
  (base / 'model.safetensors').write_bytes(b'weights')
  adapters = {'enc': {'q': {'lora_a': np.zeros((4, 2), np.float32), 'lora_b': np.zeros((2, 4), np.float32)}}}
  path = tmp_path / 'adapters'
  artifacts.save_adapters(adapters, str(path), base_dir=str(base),
                          lora={'r': 2, 'alpha': 4.0, 'dropout': 0.0, 'targets': ['q', 'v']})
  for name in os.listdir(path):
    assert stat.S_IMODE(os.stat(path / name).st_mode) == 0o666 & ~local_files.UMASK, name
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~local_files.UMASK


# ------------------------------------------------------------------ 7. signals
SWALLOWED = """
import os, signal, sys, time
from e2urec_jax import interrupts
interrupts.install()
class Dropped:
  def __del__(self):  # the signal lands here, as in JAX's garbage-collector callback: Python drops it
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)
t0 = time.monotonic()
try:
  Dropped()
  while True:
    time.sleep(0.05)
except KeyboardInterrupt:
  interrupts.handled()
  print(f'caught after {time.monotonic() - t0:.2f}s')
  sys.exit(interrupts.exit_code())
"""


def test_a_swallowed_interrupt_is_raised_again_quietly():
  out = subprocess.run([sys.executable, '-c', SWALLOWED], cwd=REPO, capture_output=True, text=True, timeout=30)
  assert out.returncode == 130 and out.stdout.startswith('caught after'), (out.returncode, out.stderr)
  assert float(out.stdout.split()[2][:-1]) < 2.0  # raised again by the watchdog, not the 4 s deadline
  assert 'Exception ignored' not in out.stderr and 'Traceback' not in out.stderr


# ------------------------------------------------------------------ 7. signals (slow: a real command)
@pytest.mark.slow
@pytest.mark.parametrize('after_s', [0.5, 3.0, 10.0])  # start-up, compile, training
def test_sigint_at_any_moment_stops_within_ten_seconds(tmp_path, after_s):
  work = tmp_path / 'work'
  p = subprocess.Popen([sys.executable, '-m', 'e2urec_jax', 'run', '--config=configs/demo.py:test',
                        '--config.progress=False', f'--config.jax_cache_dir={CACHE}', f'--workdir={work}'],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  time.sleep(after_s)
  sent = time.monotonic()
  p.send_signal(signal.SIGINT)
  _, err = p.communicate(timeout=60)
  took = time.monotonic() - sent
  assert took < 10 and p.returncode == 130, (after_s, took, p.returncode, err[-2000:])
  assert 'interrupted: the last checkpoint is kept; rerun the same command to resume' in err
  assert 'Traceback' not in err


@pytest.mark.slow
def test_sigterm_stops_with_143(tmp_path):
  p = subprocess.Popen([sys.executable, '-m', 'e2urec_jax', 'run', '--config=configs/demo.py:test',
                        '--config.progress=False', f'--config.jax_cache_dir={CACHE}', f'--workdir={tmp_path}'],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  time.sleep(4)
  sent = time.monotonic()
  p.terminate()
  _, err = p.communicate(timeout=60)
  assert time.monotonic() - sent < 10 and p.returncode == 143 and 'interrupted:' in err, err[-2000:]

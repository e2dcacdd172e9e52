"""Bad input (issue 8): each case fails with one line that names the thing and the fix, a non-zero
exit, nothing half-written, and the earlier data/checkpoints intact.

CLI cases run as subprocesses, all started at once by one module fixture (they overlap on
the 2 cores); library-level cases (disk full, NaN, adapter rank) run in-process on a toy phase.
Cases covered elsewhere: tests/test_data_readers.py (malformed line, missing file, item without
row), tests/test_data_protocol.py (forget fraction, empty forget set), tests/test_cli.py
(unknown config key, wrong type), tests/test_engine.py (checkpoint of another base, in-process),
tests/test_forget.py (forget user not in the data, empty --users).
"""
import errno
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import CACHE, REPO, load_config
from data_testing import write_ml100k
from e2urec_jax.errors import UserError

TINY = ['--config=configs/demo.py:test', '--config.progress=False', f'--config.jax_cache_dir={CACHE}',
        '--config.train.max_steps=12', '--config.checkpoint.every_steps=4', '--config.data.num_samples=600']


def _start(args, env=None):
  """The CLI (tests/fault_cli.py: with the fault hooks of `env`, tests/fault_hooks.py)."""
  return subprocess.Popen([sys.executable, os.path.join(REPO, 'tests', 'fault_cli.py'), *args], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))


def _one_line_error(result, *needles, code=1):
  rc, _, err = result
  assert rc == code, err[-2000:]
  assert err.strip() and err.strip().count('\n') == 0, err[-2000:]
  for needle in needles:
    assert needle in err, err
  return err


def _tree(path):
  return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)


def _small_vocab_model(folder):
  from e2urec_jax.config import default_config
  from e2urec_jax.models import init_params, model_from_hf_config, save_pretrained, scratch_hf_config
  hf = scratch_hf_config(default_config().model.scratch, vocab_size=50, pad_id=0, eos_id=1, bos_id=3, dropout=0.0)
  model = model_from_hf_config(hf)
  save_pretrained(model, init_params(model, jax.random.key(0)), folder)


@pytest.fixture(scope='module')
def cli(tmp_path_factory):
  """Every CLI case, started together; name -> (returncode, stdout, stderr), plus the paths they used."""
  from e2urec_jax.data.prepare import prepare
  root = tmp_path_factory.mktemp('bad_input')
  paths = {'root': root}
  good, bad, commas = root / 'good', root / 'bad', root / 'commas'
  for folder in (good, bad, commas):
    write_ml100k(str(folder))
  lines = (bad / 'u.data').read_text().splitlines()
  lines[6] = '1\t2\t3'  # a field short
  (bad / 'u.data').write_text('\n'.join(lines) + '\n')
  (commas / 'u.data').write_text((commas / 'u.data').read_text().replace('\t', ','))
  ml = ['--config=configs/ml100k.py:cpu', '--config.progress=False', '--config.jax_cache_dir=']
  # An earlier good preparation that a failing one must leave as it was.
  config = load_config('configs/ml100k.py:cpu')
  config.data.raw_dir, config.progress, config.jax_cache_dir = str(good), False, ''
  prepare(config, str(root / 'prepared'))
  paths['manifest_before'] = (root / 'prepared' / 'data' / 'manifest.json').read_text()
  (root / 'a_file').write_text('not a folder')
  (root / 'badcfg').mkdir()
  (root / 'badcfg' / 'config.json').write_text('{"seed": 1, "trian": {"epochs": 2}}')
  _small_vocab_model(str(root / 'small_vocab_model'))
  procs = {
      'malformed': _start(['prepare', *ml, f'--config.data.raw_dir={bad}', '--restart=data',  # other files: asked
                           f'--workdir={root / "prepared"}']),
      'separator': _start(['prepare', *ml, f'--config.data.raw_dir={commas}', f'--workdir={root / "sep"}']),
      'fraction': _start(['prepare', *TINY, '--config.data.forget_fraction=1.5', f'--workdir={root / "frac"}']),
      'saved_config': _start(['evaluate', f'--workdir={root / "badcfg"}']),
      'not_writable': _start(['prepare', *TINY, f'--workdir={root / "a_file" / "run"}']),
      'vocab': _start(['train', *TINY, f'--config.model.name_or_path={root / "small_vocab_model"}',
                       '--config.model.tokenizer=train', f'--workdir={root / "vocab"}']),
      'nan': _start(['train', *TINY, f'--workdir={root / "nan"}'], env={'E2UREC_TEST_NAN_LR_AT_STEP': 'original:6'}),
  }
  results = {}
  for name, p in procs.items():
    out, err = p.communicate(timeout=300)
    results[name] = (p.returncode, out, err)
  return results, paths


@pytest.mark.slow
def test_malformed_rating_line_keeps_earlier_data(cli):
  results, paths = cli
  _one_line_error(results['malformed'], 'u.data line 7', 'expected 4 fields', 'fix or remove that line')
  prepared = paths['root'] / 'prepared'
  assert (prepared / 'data' / 'manifest.json').read_text() == paths['manifest_before']
  assert not [p for p in os.listdir(prepared) if p.startswith('.tmp')]


@pytest.mark.slow
def test_wrong_separator_names_both_separators(cli):
  results, paths = cli
  _one_line_error(results['separator'], 'u.data line 1', "','-separated", "write the file with '\\t'")
  assert not os.path.exists(paths['root'] / 'sep' / 'data')


def test_wrong_separator_in_a_csv_table(tmp_path):
  from e2urec_jax.config import default_config
  from e2urec_jax.data import tabular
  (tmp_path / 'r.csv').write_text('user_id;item_id;rating;timestamp\n1;2;4;100\n')
  c = default_config().data.csv
  c.ratings = str(tmp_path / 'r.csv')
  with pytest.raises(UserError, match=r"header .* is ';'-separated .* write the file with ','"):
    tabular.read_tabular(c)


@pytest.mark.slow
def test_forget_fraction_outside_unit_interval_writes_nothing(cli):
  results, paths = cli
  _one_line_error(results['fraction'], 'config.data.forget_fraction=1.5', 'a finite number > 0 and < 1')
  assert _tree(paths['root'] / 'frac') == []


@pytest.mark.slow
def test_unknown_key_in_saved_config(cli):
  results, _ = cli
  _one_line_error(results['saved_config'], "unknown config key 'trian'", 'remove it or fix its name')


@pytest.mark.slow
def test_workdir_not_writable(cli):
  results, _ = cli
  _one_line_error(results['not_writable'], 'is not writable', 'pass a --workdir you can write to')


@pytest.mark.slow
def test_tokenizer_larger_than_model_vocab(cli):
  results, paths = cli
  _one_line_error(results['vocab'], 'vocab_size 50', 'use the tokenizer that belongs to the model')
  work = paths['root'] / 'vocab'
  assert not os.path.exists(work / 'models') and not os.path.exists(work / 'phases')


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(cli):
  """A NaN learning rate at step 6 makes the weights NaN: step 7's loss is the first non-finite one."""
  results, paths = cli
  _one_line_error(results['nan'], 'original: loss became non-finite (nan) at step 7 of 12',
                  'last good checkpoint (step 4)', 'lower the learning rate')
  phase = paths['root'] / 'nan' / 'phases' / 'original'
  assert sorted(os.listdir(phase / 'ckpt')) == ['4']
  assert not (phase / 'done.json').exists() and not (paths['root'] / 'nan' / 'models' / 'original').exists()
  manager = ocp.CheckpointManager(str(phase / 'ckpt'))
  meta = manager.restore(4, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  manager.close()
  assert meta['step'] == 4 and meta['best_valid'] == float('inf')


# ------------------------------------------------------------------ in-process: a toy phase
def _toy_phase(phase_dir, num_steps, *, lr=0.1, every=4, loss='square', start=0.5, callbacks=()):
  """run_phase on a 3-parameter model: compiles in milliseconds, exercises the real loop and orbax."""
  from e2urec_jax.config import default_config
  from e2urec_jax.train import mesh as mesh_lib
  from e2urec_jax.train.loop import PhaseOptions, run_phase
  from e2urec_jax.train.plan import PhasePlan
  from e2urec_jax.train.timed_jit import TimedJit
  config = default_config()
  config.progress = False
  config.checkpoint.every_steps = every

  def step(trainable, opt_state, frozen, batch, rng, hp):
    w = trainable['w']
    value = jnp.sum((w - 1.0) ** 2) if loss == 'square' else jnp.sum(jnp.sqrt(w))
    value = value + 0.0 * batch['x'].sum()
    return {'w': w - hp['lr']}, opt_state, {'loss': value}

  mesh = mesh_lib.make_mesh()
  plan = PhasePlan(
      name='toy', kind='full', step=TimedJit(jax.jit(step)), start=None, trainable={'w': jnp.full((3,), start)},
      frozen={}, batch_for_step=lambda s: {'x': np.ones((jax.device_count(), 2), np.float32)},
      hparams_for_step=lambda s: {'lr': lr}, num_steps=num_steps, examples_per_step=1, base_dir='', seed=0,
      save='none')
  return run_phase(plan, PhaseOptions.from_config(config, phase_dir=str(phase_dir), mesh=mesh, base_sha256='toy',
                                                  opt_state={'count': jnp.zeros(())}, callbacks=callbacks))


def test_real_nan_stops_the_phase_and_no_nan_checkpoint_is_written(tmp_path):
  """sqrt of a weight the updates push below zero: w = 0.55 - 0.1 * 6 < 0 when step 7 runs."""
  with pytest.raises(UserError, match=r'toy: loss became non-finite \(nan\) at step 7 of 12; the last good '
                                      r'checkpoint \(step 4\)'):
    _toy_phase(tmp_path, 12, loss='sqrt', start=0.55)
  assert sorted(os.listdir(tmp_path / 'ckpt')) == ['4']


def test_disk_full_on_checkpoint_save_keeps_previous_checkpoint(tmp_path):
  """ENOSPC inside orbax's save (the commit of the written folder) at step 8: step 4 stays, nothing partial.
  The failing commit is orbax's own through its public temporary_path_class option (tests/fault_hooks.py)."""
  from fault_hooks import Faults
  from e2urec_jax.train.checkpoint import ResumeCheckpoints
  with pytest.raises(UserError, match=r'checkpoint save at step 8 failed .*No space left on device; free disk space '
                                      r'and rerun the same command \(the previous checkpoint, step 4, is intact\)'):
    _toy_phase(tmp_path, 12, callbacks=[Faults(disk_full_at='toy:8')])
  assert sorted(os.listdir(tmp_path / 'ckpt')) == ['4']  # no temp folder of step 8 left behind
  ckpt = ResumeCheckpoints(str(tmp_path / 'ckpt'), max_to_keep=2, base_sha256='toy')
  state, meta = ckpt.restore({'trainable': {'w': np.zeros(3, np.float32)}, 'opt_state': {'count': np.zeros(())}})
  ckpt.close()
  assert meta['step'] == 4 and np.allclose(state['trainable']['w'], 0.5 - 4 * 0.1)
  result = _toy_phase(tmp_path, 12)  # disk freed: the same call resumes from step 4 and finishes
  assert result.steps == 12 and np.allclose(np.asarray(result.trainable['w']), 0.5 - 12 * 0.1)


def test_disk_full_while_writing_a_model_or_json_leaves_the_old_one(tmp_path, monkeypatch):
  from e2urec_jax import runtime
  from e2urec_jax.train import artifacts
  model_dir = tmp_path / 'model'
  model_dir.mkdir()
  (model_dir / 'model.safetensors').write_bytes(b'old weights')

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr('e2urec_jax.train.artifacts.save_pretrained', full)
  with pytest.raises(UserError, match=r'writing .*model failed: No space left on device; free disk space'):
    artifacts.save_full(None, {}, str(model_dir))
  assert (model_dir / 'model.safetensors').read_bytes() == b'old weights'
  assert sorted(os.listdir(tmp_path)) == ['model']
  runtime.write_json(str(tmp_path / 'done.json'), {'ok': 1})
  monkeypatch.setattr('os.fsync', full)  # the disk fills up as the temp file is written
  with pytest.raises(UserError, match='free disk space'):
    runtime.write_json(str(tmp_path / 'done.json'), {'ok': 2})
  assert runtime.read_json(str(tmp_path / 'done.json')) == {'ok': 1} and sorted(os.listdir(tmp_path)) == [
      'done.json', 'model']


def _adapter_folder(tmp_path, r):
  from e2urec_jax.train import artifacts
  base = tmp_path / 'base'
  base.mkdir(exist_ok=True)
  (base / 'model.safetensors').write_bytes(b'weights')
  adapters = {'enc': {'q': {'lora_a': np.zeros((8, r), np.float32), 'lora_b': np.zeros((r, 8), np.float32)}}}
  path = tmp_path / f'adapters_r{r}'
  artifacts.save_adapters(adapters, str(path), base_dir=str(base),
                          lora={'r': r, 'alpha': 32.0, 'dropout': 0.0, 'targets': ['q', 'v']})
  return path


def test_adapter_rank_mismatch_is_a_clear_error(tmp_path):
  """Adapters of r=8 in a run configured with r=16 would run at the wrong scale alpha/r: refused."""
  from e2urec_jax import runtime
  from e2urec_jax.train import artifacts
  path = _adapter_folder(tmp_path, 8)
  run = {'r': 16, 'alpha': 32.0, 'dropout': 0.05, 'targets': ['q', 'v']}
  with pytest.raises(UserError, match=r'adapters have r=8 but this run is configured with r=16; '
                                      r'pass --config.lora.r=8 or retrain the adapters'):
    artifacts.load_adapters(str(path), expect=run)
  with pytest.raises(UserError, match='r=8 but this run is configured with r=16'):
    artifacts.check_adapter_dir(str(path), run)  # the pre-flight `forget` runs before resuming a request
  artifacts.load_adapters(str(path), expect=dict(run, r=8))  # the matching run loads them
  meta = runtime.read_json(str(path / artifacts.ADAPTER_META))
  runtime.write_json(str(path / artifacts.ADAPTER_META), dict(meta, r=16))  # folder says 16, tensors are 8
  with pytest.raises(UserError, match=r'adapter_config.json is corrupt: \d+ bytes where \d+ were written'):
    artifacts.load_adapters(str(path))  # edited after it was stamped: named as corrupt
  from e2urec_jax import stamps
  stamps.write(str(path))  # a folder stamped as it is (written so): the contents disagree
  with pytest.raises(UserError, match=r'holds rank \[8\] adapters but adapter_config.json says r=16'):
    artifacts.load_adapters(str(path))

"""Faults and determinism (issue 8): kill -9 during training and inside a checkpoint save, then the
same command again, ends with the weights of an uninterrupted run; two runs with the same config
and seed give the same metrics and weights; a checkpoint of another base is refused at the CLI.

`train` on demo:test for 12 steps with a checkpoint every 4, as subprocesses. The kills are the
callbacks of tests/fault_hooks.py, passed in by tests/fault_cli.py (E2UREC_TEST_KILL_AT_STEP,
E2UREC_TEST_KILL_IN_SAVE).
Processes that do not depend on each other run at the same time.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import CACHE, REPO

pytestmark = pytest.mark.slow  # end to end, in subprocesses

FAULT_CLI = os.path.join(REPO, 'tests', 'fault_cli.py')  # the CLI with tests/fault_hooks.py's hooks

ARGS = ['train', '--config=configs/demo.py:test', '--config.progress=False', f'--config.jax_cache_dir={CACHE}',
        '--config.train.max_steps=12', '--config.checkpoint.every_steps=4', '--config.data.num_samples=600']


def _start(workdir, env=None):
  return subprocess.Popen([sys.executable, FAULT_CLI, *ARGS, f'--workdir={workdir}'], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))


def _finish(procs: dict) -> dict:
  out = {}
  for name, p in procs.items():
    stdout, stderr = p.communicate(timeout=300)
    out[name] = (p.returncode, stdout, stderr)
  return out


def _listing(folder):
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Two uninterrupted runs; one killed after step 6, one killed inside the save of step 8; then the reruns."""
  root = tmp_path_factory.mktemp('faults')
  w = {k: str(root / k) for k in ('straight', 'twin', 'killed', 'killed_in_save', 'other_base')}
  first = _finish({
      'straight': _start(w['straight']), 'twin': _start(w['twin']),
      'killed': _start(w['killed'], {'E2UREC_TEST_KILL_AT_STEP': 'original:6'}),
      'killed_in_save': _start(w['killed_in_save'], {'E2UREC_TEST_KILL_IN_SAVE': 'original:8'})})
  after_kill = {k: _listing(os.path.join(w[k], 'phases', 'original', 'ckpt')) for k in ('killed', 'killed_in_save')}
  # The killed run's folder, its base model swapped for another: its checkpoint must be refused.
  shutil.copytree(w['killed'], w['other_base'])
  _perturb_base(os.path.join(w['other_base'], 'pretrained', 'model.safetensors'))
  second = _finish({'killed': _start(w['killed']), 'killed_in_save': _start(w['killed_in_save']),
                    'other_base': _start(w['other_base'])})
  return {'first': first, 'second': second, 'after_kill': after_kill, 'workdirs': w}


def _perturb_base(path):
  """Another base model, intact (stamped as written): not a damaged file, which would be rebuilt."""
  from safetensors.numpy import load_file, save_file
  from e2urec_jax import stamps
  tensors = load_file(path)
  name = sorted(tensors)[0]
  tensors[name] = tensors[name] + np.float32(1e-3)
  save_file(tensors, path)
  stamps.write(os.path.dirname(path))


def _weights(workdir):
  from safetensors.numpy import load_file
  return load_file(os.path.join(workdir, 'models', 'original', 'model.safetensors'))


def _done(workdir):
  from e2urec_jax import runtime
  return runtime.read_json(os.path.join(workdir, 'phases', 'original', 'done.json'))


def _assert_same_weights(a, b):
  wa, wb = _weights(a), _weights(b)
  assert sorted(wa) == sorted(wb)
  for k in wa:
    np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_same_config_and_seed_give_same_metrics_and_weights(runs):
  w, first = runs['workdirs'], runs['first']
  assert first['straight'][0] == 0 and first['twin'][0] == 0, first['twin'][2][-2000:]
  a, b = _done(w['straight']), _done(w['twin'])
  assert a['best_valid'] == b['best_valid'] and a['final_loss'] == b['final_loss'] and a['steps'] == b['steps'] == 12
  _assert_same_weights(w['straight'], w['twin'])
  def logged(workdir):  # every logged loss, grad norm and valid loss; throughput aside
    lines = open(os.path.join(workdir, 'phases', 'original', 'metrics.jsonl'))
    return [{k: v for k, v in json.loads(x).items() if k != 'examples_per_s'} for x in lines]
  assert logged(w['straight']) == logged(w['twin'])


def test_kill_during_training_then_rerun_matches_uninterrupted_run(runs):
  w, first, second = runs['workdirs'], runs['first'], runs['second']
  assert first['killed'][0] == -signal.SIGKILL
  assert runs['after_kill']['killed'] == ['4']  # killed at step 6, between checkpoints
  rc, out, err = second['killed']
  assert rc == 0, err[-2000:]
  assert _done(w['killed'])['best_valid'] == _done(w['straight'])['best_valid']
  _assert_same_weights(w['straight'], w['killed'])


def test_kill_inside_checkpoint_save_then_rerun_matches_uninterrupted_run(runs):
  w, first, second = runs['workdirs'], runs['first'], runs['second']
  assert first['killed_in_save'][0] == -signal.SIGKILL
  left = runs['after_kill']['killed_in_save']
  assert left[0] == '4' and len(left) == 2 and left[1].startswith('8.orbax-checkpoint-tmp')  # written, not committed
  rc, out, err = second['killed_in_save']
  assert rc == 0, err[-2000:]
  assert not [p for p in _listing(os.path.join(w['killed_in_save'], 'phases', 'original', 'ckpt')) if 'tmp' in p]
  _assert_same_weights(w['straight'], w['killed_in_save'])


def test_checkpoint_of_another_base_model_is_refused(runs):
  w, second = runs['workdirs'], runs['second']
  rc, _, err = second['other_base']
  assert rc == 1 and err.strip().count('\n') == 0, err[-2000:]
  assert 'holds checkpoints of another base model (hash mismatch)' in err and 'fresh --workdir' in err
  assert _listing(os.path.join(w['other_base'], 'phases', 'original', 'ckpt')) == ['4']  # left as it was
  assert not os.path.exists(os.path.join(w['other_base'], 'models', 'original'))

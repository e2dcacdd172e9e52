"""Test set-up: CPU, a persistent compilation cache, and one shared tiny end-to-end run."""
import hashlib
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'e2urec_jax', 'xla-tests')
ML100K = os.path.join(REPO, '..', 'shared', 'data', 'ml-100k')

import jax  # noqa: E402

jax.config.update('jax_compilation_cache_dir', CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

import pytest  # noqa: E402

import e2urec_jax.methods  # noqa: E402,F401 (the registry, as every command fills it: the report reads it)


def load_config(path_and_arg: str):
  """configs/x.py[:arg] -> ConfigDict, as the CLI loads it."""
  import importlib.util
  path, _, arg = path_and_arg.partition(':')
  spec = importlib.util.spec_from_file_location('cfg_' + os.path.basename(path)[:-3], os.path.join(REPO, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()


def shrink(c, steps: int = 40, batch: int = 8):
  """A `runlocal`-style switch: same experiment, every phase cut short (was config.shrink)."""
  from e2urec_jax.methods import spec as method_spec
  c.train.epochs = 1
  c.train.max_steps = steps
  c.train.batch_size = batch
  c.augment.steps = steps // 2
  c.augment.batch_size = batch
  for spec in method_spec.specs():  # every method that trains in steps
    if 'steps' in spec.defaults:
      c.unlearn[spec.name].steps = steps
      c.unlearn[spec.name].batch_size = batch
  c.unlearn.receraser.attention_steps = 10
  c.eval.batch_size = 32
  c.checkpoint.every_steps = 10 * steps
  return c


def tiny_run_config(methods: str):
  """configs/demo.py:test cut to one seed of 600 samples, a 4-step original and no noise floor: a
  `run` of `methods` in seconds (the tests of one method's plumbing)."""
  config = load_config('configs/demo.py:test')
  config.jax_cache_dir, config.progress = CACHE, False
  config.seeds = ''  # one seed
  config.eval.noise_floor = False
  config.data.num_samples = 600
  config.train.max_steps = 4
  config.unlearn.methods = methods
  return config


def tiny_scored_run_config():
  """tiny_run_config of E2URec and NegGrad at 3 steps each (the augmented model 2), no trajectory,
  15 ranked positives: a whole run and its report in seconds."""
  config = tiny_run_config('e2urec,neggrad')
  config.eval.trajectory_every = 0
  for name in ('e2urec', 'neggrad'):
    config.unlearn[name].steps = 3
  config.augment.steps = 2
  config.eval.ranking_max_positives = 15
  return config


def file_digests(folder: str) -> dict:
  """{file relative to folder: sha256} of every file under `folder` but the commands' `.lock` (its
  holder is written in and wiped): what shows a refused command changed nothing."""
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      if f != '.lock':
        path = os.path.join(root, f)
        out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


def files_holding(root: str, needles: list) -> list:
  """[(file relative to root, [kinds])] of every file under `root` holding any (kind, bytes) needle:
  the byte scan that shows a forgotten record is gone from a workdir."""
  out = []
  for folder, _, files in os.walk(root):
    for f in files:
      path = os.path.join(folder, f)
      blob = open(path, 'rb').read()
      found = [k for k, n in needles if n in blob]
      if found:
        out.append((os.path.relpath(path, root), found))
  return out


@pytest.fixture(scope='session')
def demo_run(tmp_path_factory):
  """One shrunken `run` of the demo experiment, shared by the end-to-end tests (all in
  test_experiment.py, so one xdist worker builds it)."""
  from e2urec_jax.experiment import run_experiment
  config = load_config('configs/demo.py:test')
  config.jax_cache_dir = CACHE
  config.progress = False
  workdir = str(tmp_path_factory.mktemp('demo_run'))
  run_experiment(config, workdir)
  return config, workdir


"""Workdirs on an object store: gs://bucket/run through the code path a real bucket takes.

tests/fake_object_store.py registers an in-memory store as fsspec's gs:// driver (gcsfs's
place), without rename or locks. prepare -> train -> retrain -> unlearn -> evaluate on it
give the numbers a local workdir gives; a run interrupted on one "VM" resumes on another from
the checkpoint it uploaded; a gs:// workdir without credentials (or without gcsfs) fails with
one line naming the fix.
"""
import json
import os
import subprocess
import sys

import pytest

import fake_object_store as fake
from conftest import CACHE, REPO, load_config
from e2urec_jax import commands, storage
from e2urec_jax.errors import UserError
from e2urec_jax.train.callbacks import Callback

URL = 'gs://bucket/runs/demo'
TIMINGS = ('time_s', 'compile_s', 'examples_per_s', 'peak_memory_bytes', 'unlearn_time_s', 'augment_time_s',
           'frozen_inputs_time_s', 'elapsed_s', 'wall_s', 'seconds')


@pytest.fixture
def bucket():
  undo = fake.install()
  _fresh_process()
  yield fake.FakeGCS
  _fresh_process()
  undo()


def _fresh_process():
  """What a new process (or a new VM after preemption) starts with: no staging folder, no copies."""
  import shutil
  root = storage._STAGE['root']
  if root:
    shutil.rmtree(root, ignore_errors=True)
  storage._STAGE['root'] = None
  storage._COPIES.clear()


def _config(**overrides):
  c = load_config('configs/demo.py:test')
  c.jax_cache_dir, c.progress = CACHE, False
  c.data.num_samples = 600
  c.train.epochs, c.train.max_steps, c.train.eval_every = 1, 6, 3
  c.augment.mode, c.augment.steps, c.augment.batch_size = 'lora', 2, 8
  c.unlearn.e2urec.steps, c.unlearn.e2urec.batch_size = 3, 8
  c.eval.noise_floor = False
  c.checkpoint.every_steps = 2
  for key, value in overrides.items():
    section, field = key.split('.')
    c[section][field] = value
  return c


def _pipeline(config, workdir):
  commands.prepare(config, workdir)
  commands.train(config, workdir)
  commands.retrain(config, workdir)
  commands.unlearn(config, workdir)
  commands.evaluate(config, workdir)


def _without_timings(tree):
  if isinstance(tree, dict):
    return {k: _without_timings(v) for k, v in tree.items()
            if k not in TIMINGS and not k.endswith(('_time_s', '_s', '_bytes', '_utc')) and k != 'workdir'}
  if isinstance(tree, list):
    return [_without_timings(v) for v in tree]
  return tree


@pytest.mark.slow
def test_a_gs_workdir_gives_the_local_numbers(bucket, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a URL mangled into a local path ('gs:/bucket/...') would land here
  local = str(tmp_path / 'local')
  _pipeline(_config(), local)
  _fresh_process()
  _pipeline(_config(), URL)
  assert os.listdir(tmp_path) == ['local'], 'a gs:// path was written to the local disk'  # (before the exports)
  assert bucket.writes > 0

  remote_results = json.loads(storage.read_text(f'{URL}/results.json'))
  local_results = json.load(open(os.path.join(local, 'results.json')))
  assert _without_timings(remote_results['methods']) == _without_timings(local_results['methods'])
  for name in ('config.json', 'data/manifest.json', 'tokenizer/tokenizer.json', 'models/original/config.json',
               'models/e2urec/adapter_config.json', 'phases/e2urec/done.json', 'phases/original/metrics.jsonl',
               'results.md', 'test_auc.png'):
    assert storage.exists(f'{URL}/{name}'), name
  here = sorted(storage.files_under(URL))
  there = sorted(os.path.relpath(os.path.join(r, f), local) for r, _, fs in os.walk(local) for f in fs)
  # the same files, but the bucket keeps checkpoints as uploaded steps with a marker, and no hash caches of
  # the local copies it downloaded (they are beside the downloads); TensorBoard names its files by time;
  # a local workdir keeps the (released) lock file of its one writer, a bucket has no locks
  def comparable(names):
    return {n for n in names if '/ckpt/' not in n and '/tb/' not in n and not n.endswith('.sha256.json')
            and '/hf_cache/' not in n and n != '.lock'}
  assert comparable(here) == comparable(there)
  steps = [n for n in here if n.startswith('phases/original/ckpt/') and n.endswith('/' + 'uploaded.json')]
  assert steps == [f'phases/original/ckpt/{n}/uploaded.json' for n in (4, 6)], steps  # max_to_keep=2

  # the other readers of a workdir: export (both formats, to a bucket and to a disk) and predict
  commands.export(_config(), URL, output=f'{URL}-peft', model='e2urec', fmt='peft')
  assert {'adapter_config.json', 'adapter_model.safetensors', 'base/config.json', 'base/model.safetensors',
          'base/tokenizer.json'} <= set(storage.files_under(f'{URL}-peft'))
  for workdir, out in ((URL, tmp_path / 'merged_gs'), (local, tmp_path / 'merged_local')):
    commands.export(_config(), workdir, output=str(out), model='e2urec')
  assert open(tmp_path / 'merged_gs' / 'model.safetensors', 'rb').read() == \
      open(tmp_path / 'merged_local' / 'model.safetensors', 'rb').read()
  (tmp_path / 'pairs.csv').write_text('user_id,item_id\n1,1\n2,5\n')
  commands.predict(_config(), URL, input=str(tmp_path / 'pairs.csv'), output=f'{URL}-predictions.csv', model='e2urec')
  commands.predict(_config(), local, input=str(tmp_path / 'pairs.csv'), output=str(tmp_path / 'p.csv'), model='e2urec')
  assert storage.read_text(f'{URL}-predictions.csv') == open(tmp_path / 'p.csv').read()


class _StopAt(Callback):
  def __init__(self, phase, step):
    self.phase, self.step, self.first = phase, step, None

  def after_step(self, event):
    if event.phase != self.phase:
      return
    if self.first is None:
      self.first = event.step
    if event.step == self.step:
      raise KeyboardInterrupt


@pytest.mark.slow
def test_a_preempted_phase_resumes_from_the_uploaded_checkpoint(bucket):
  config = _config(**{'train.max_steps': 8, 'train.eval_every': 4})
  commands.prepare(config, URL)
  stop = _StopAt('original', 5)  # checkpoints every 2 steps: 2 and 4 are uploaded
  with pytest.raises(KeyboardInterrupt):
    commands.train(config, URL, callbacks=(stop,))
  _fresh_process()  # another VM: nothing local survives
  again = _StopAt('original', -1)
  commands.train(config, URL, callbacks=(again,))
  assert again.first == 5  # resumed after step 4
  done = json.loads(storage.read_text(f'{URL}/phases/original/done.json'))
  assert done['steps'] == 8
  logged = [json.loads(line)['step'] for line in storage.read_text(f'{URL}/phases/original/metrics.jsonl').splitlines()]
  assert logged == sorted(logged) and logged[-1] == 8  # the steps after the checkpoint were logged once


def test_storage_layer_on_the_fake_bucket(bucket, tmp_path):
  from e2urec_jax import runtime
  runtime.write_json(f'{URL}/a/x.json', {'k': 1})
  assert runtime.read_json(f'{URL}/a/x.json') == {'k': 1}
  assert storage.isdir(f'{URL}/a') and storage.listdir(URL) == ['a'] and not storage.exists(f'{URL}/b')
  with runtime.atomic_dir(f'{URL}/folder') as tmp:
    assert not storage.is_remote(tmp)
    open(os.path.join(tmp, 'weights.bin'), 'wb').write(b'w' * 10)
    open(os.path.join(tmp, 'config.json'), 'w').write('{}')
  assert storage.files_under(f'{URL}/folder') == {'weights.bin': 10, 'config.json': 2}
  order = []
  original = fake.FakeGCS.put_file
  fake.FakeGCS.put_file = lambda self, lpath, rpath, *a, **k: (order.append(os.path.basename(rpath)),
                                                                 original(self, lpath, rpath, *a, **k))[1]
  try:
    with runtime.atomic_dir(f'{URL}/folder') as tmp:
      open(os.path.join(tmp, 'weights.bin'), 'wb').write(b'v' * 3)
      open(os.path.join(tmp, 'config.json'), 'w').write('{"v": 2}')
  finally:
    fake.FakeGCS.put_file = original
  assert order == ['weights.bin', 'config.json']  # the marker last: a reader never sees it before the weights
  assert storage.files_under(f'{URL}/folder') == {'weights.bin': 3, 'config.json': 8}
  copy = storage.local_copy(f'{URL}/folder')  # the folder built above, not a download
  assert open(os.path.join(copy, 'config.json')).read() == '{"v": 2}'
  storage.write_bytes(f'{URL}/folder/.sha256.json', b'{}')  # a file written into it reaches the copy too
  assert open(os.path.join(copy, '.sha256.json')).read() == '{}'
  storage.remove(f'{URL}/folder/.sha256.json')
  assert not os.path.exists(os.path.join(copy, '.sha256.json'))
  storage._COPIES.clear()
  downloaded = storage.local_copy(f'{URL}/folder')
  assert downloaded != copy and open(os.path.join(downloaded, 'weights.bin'), 'rb').read() == b'vvv'
  with pytest.raises(RuntimeError):  # a failure inside the block publishes nothing
    with runtime.atomic_dir(f'{URL}/other') as tmp:
      open(os.path.join(tmp, 'config.json'), 'w').write('{}')
      raise RuntimeError('boom')
  assert not storage.exists(f'{URL}/other')
  storage.rmtree(f'{URL}/folder')
  assert not storage.exists(f'{URL}/folder')


def test_local_paths_keep_their_behaviour(tmp_path):
  """The layer is transparent for local paths: abspath, atomic rename, umask permissions."""
  from e2urec_jax import runtime
  assert storage.abspath('rel') == os.path.abspath('rel') and not storage.is_remote(str(tmp_path))
  assert storage.abspath('gs://b/x/') == 'gs://b/x'
  storage.write_bytes(str(tmp_path / 'f.bin'), b'abc')
  mask = os.umask(0)
  os.umask(mask)
  assert (os.stat(tmp_path / 'f.bin').st_mode & 0o777) == 0o666 & ~mask
  assert storage.local_copy(str(tmp_path)) == str(tmp_path)
  runtime.write_json(str(tmp_path / 'j.json'), {'a': 1})
  assert sorted(os.listdir(tmp_path)) == ['f.bin', 'j.json']  # no temp files left


def test_forget_and_bench_refuse_a_bucket_with_one_line(bucket):
  with pytest.raises(UserError) as e:
    commands.forget(_config(), URL, users='1')
  assert '\n' not in str(e.value) and 'needs a local --workdir' in str(e.value) and 'gsutil -m rsync' in str(e.value)
  with pytest.raises(UserError, match='bench needs a local --workdir'):
    commands.bench(_config(), URL)


def _cli_on_gs(tmp_path, prelude: str):
  code = (f'import sys; sys.path.insert(0, {os.path.join(REPO, "tests")!r})\n{prelude}\n'
          'from e2urec_jax.main import run_cli\nsys.argv = ["e2urec_jax"] + sys.argv[1:]\nrun_cli()\n')
  return subprocess.run([sys.executable, '-c', code, 'prepare', '--config=configs/demo.py:test',
                         '--workdir=gs://e2urec-no-such-bucket/run'], cwd=REPO, capture_output=True, text=True,
                        timeout=300)


def test_gs_workdir_without_credentials_is_one_line(tmp_path):
  out = _cli_on_gs(tmp_path, 'import fake_object_store as f; f.install(f.AnonymousGCS)')
  assert out.returncode == 1, out.stderr
  line = out.stderr.strip()
  assert '\n' not in line, line
  assert line.startswith('error: writing to gs://e2urec-no-such-bucket/run was refused: no credentials'), line
  assert 'gcloud auth application-default login' in line and 'GOOGLE_APPLICATION_CREDENTIALS' in line, line


def test_gs_workdir_as_installed_is_one_line(tmp_path):
  """This machine's own gs:// driver: without gcsfs the line says to install it; with gcsfs and no
  credentials (or no network) it names the fix the same way."""
  out = _cli_on_gs(tmp_path, '')
  assert out.returncode == 1, out.stderr
  line = out.stderr.strip()
  assert '\n' not in line and line.startswith('error: '), line
  assert 'pip install gcsfs' in line or 'gcloud auth' in line or 'check the URL and the network' in line, line

"""Multi-host on one machine: two CPU processes (2 devices each) joined by jax.distributed form one
4-device mesh, run E2URec steps and evaluation, and agree with a single-process, single-device run.

The file is also the worker: `python tests/test_multihost.py PROCESS_ID PORT WORKDIR OUT`.
"""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIG = 'configs/demo.py:test'
STEPS = 3
BATCH = 8  # retain and forget rows per step (each); splits over 4 or 2 data-parallel devices
EVAL_ROWS = 13  # one eval batch of 16 rows, 3 of them padding (one compiled shape)
MODEL_AXES = (1, 2)  # pure data parallel over 4 devices, then data=2 x model=2 (FSDP across hosts' devices)


def _config(model_axis):
  from conftest import load_config
  config = load_config(CONFIG)
  config.progress = False
  config.jax_cache_dir = ''
  config.mesh.model_axis = model_axis
  config.model.scratch.num_layers = 1  # a smaller graph: compile time is most of this test
  return config


def run_e2urec(ctx) -> dict:
  """STEPS E2URec steps, then eval logits (a padded batch), with the context's mesh."""
  import jax
  from e2urec_jax.methods import common
  from e2urec_jax.methods.e2urec import e2urec_loss_fn, frozen_teachers
  from e2urec_jax.train import inference, steps
  from e2urec_jax.train import mesh as mesh_lib
  params = ctx.bundle.pretrained_params
  zero = ctx.zero_adapters(params)
  aug = jax.tree.map(lambda x: x + 0.02, ctx.new_adapters(params, 2))
  frozen = ctx.put(frozen_teachers(ctx.base_dtype(params), ctx.put_frozen(aug), ctx.put_frozen(zero)))
  adapters = jax.tree.map(lambda x: x + 0.01, ctx.new_adapters(params, 1))  # non-zero B: both A and B move
  step = steps.make_train_step(e2urec_loss_fn(ctx.model, True, True, True), ctx.mesh)
  trainable, opt_state = ctx.put(adapters), ctx.put(steps.init_opt_state(adapters))
  retain, forget = common.split_indices(ctx.data)
  hp = {k: np.float32(v) for k, v in {'lr': 1e-3, 'weight_decay': 0.0, 'w': 0.6, 'alpha': 2.0,
                                       'forget_only': 0.0}.items()}
  losses = []
  for s in range(STEPS):
    rows = slice(s * BATCH, (s + 1) * BATCH)
    batch = mesh_lib.put_batch(common.paired_batch(ctx.data, retain[rows], forget[rows]), ctx.mesh)
    trainable, opt_state, metrics = step(trainable, opt_state, frozen, batch, jax.random.key(s), hp)
    losses.append(float(metrics['loss']))
  logits_fn = inference.eval_logits_fn(ctx)
  logits = [np.asarray(logits_fn(frozen['base'], trainable, batch))[:real]
            for batch, real in inference.iterate_eval(ctx, 'test', np.arange(EVAL_ROWS), batch_size=16)]
  out = {'loss': np.asarray(losses), 'logits': np.concatenate(logits)}
  for i, leaf in enumerate(jax.tree.leaves(jax.device_get(trainable))):
    out[f'adapter_{i}'] = np.asarray(leaf)
  return out


def worker(process_id: int, port: int, workdir: str, out_dir: str):
  os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  sys.path[:0] = [REPO, HERE]
  from e2urec_jax import distributed
  distributed.add_xla_flag(distributed.CPU_MODEL_AXIS_FLAG)  # what the CLI adds for model_axis > 1
  import jax
  from conftest import CACHE  # the tests' persistent compilation cache
  from e2urec_jax.train.context import open_run
  from e2urec_jax.train.paths import run_paths
  from e2urec_jax.train import mesh as mesh_lib
  jax.config.update('jax_compilation_cache_dir', CACHE)
  assert distributed.initialize(f'localhost:{port}', num_processes=2, process_id=process_id)
  assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
  for model_axis in MODEL_AXES:
    t = time.perf_counter()
    ctx = open_run(_config(model_axis), run_paths(workdir))  # process 0 prepares the data, then process 1 reads it
    assert dict(ctx.mesh.shape) == {'data': 4 // model_axis, 'model': model_axis}
    assert mesh_lib.process_rows(8, ctx.mesh) == slice(4 * process_id, 4 * process_id + 4)  # its own half
    out = run_e2urec(ctx)
    np.savez(os.path.join(out_dir, f'p{process_id}_m{model_axis}.npz'), **out)
    print(f'model_axis {model_axis}: {time.perf_counter() - t:.1f}s')
  distributed.barrier('done')
  print(f'worker {process_id} OK')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _assert_close(got: dict, want: dict, what: str):
  np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-5, err_msg=f'{what}: step losses')
  scale = np.abs(want['logits']).max()
  np.testing.assert_allclose(got['logits'], want['logits'], rtol=1e-5, atol=1e-5 * scale, err_msg=f'{what}: logits')
  adapters = sorted(k for k in want if k.startswith('adapter_'))
  assert adapters and sorted(k for k in got if k.startswith('adapter_')) == adapters
  for k in adapters:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=f'{what}: {k}')


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
  workdir, out_dir = str(tmp_path / 'work'), str(tmp_path / 'out')
  os.makedirs(out_dir)
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS',)}
  start = time.perf_counter()
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), workdir, out_dir], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=240)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, f'worker {i} failed:\n{log[-4000:]}'
    print('\n'.join(l for l in log.splitlines() if l.startswith(('model_axis', 'worker'))))
  workers_s = time.perf_counter() - start

  # The reference: this process, one device, the same data and start (the workers wrote them).
  import jax
  from e2urec_jax.train import mesh as mesh_lib
  from e2urec_jax.train.context import open_run
  from e2urec_jax.train.paths import run_paths
  ctx = open_run(_config(1), run_paths(workdir), mesh=mesh_lib.make_mesh(1, devices=jax.devices()[:1]))
  want = run_e2urec(ctx)
  for model_axis in MODEL_AXES:
    for pid in range(2):
      with np.load(os.path.join(out_dir, f'p{pid}_m{model_axis}.npz')) as f:
        _assert_close(dict(f), want, f'process {pid}, model_axis {model_axis}')
  print(f'workers {workers_s:.1f}s, total {time.perf_counter() - start:.1f}s')


@pytest.mark.parametrize('env, expected', [
    ({}, False),
    ({'E2UREC_DISTRIBUTED': '1'}, True),
    ({'E2UREC_DISTRIBUTED': '0', 'E2UREC_COORDINATOR': 'h:1', 'E2UREC_NUM_PROCESSES': '4'}, False),
    ({'E2UREC_COORDINATOR': 'h:1', 'E2UREC_NUM_PROCESSES': '2'}, True),
    ({'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2'}, True),
    ({'E2UREC_COORDINATOR': 'h:1', 'E2UREC_NUM_PROCESSES': '1'}, False),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'w0'}, False),
])
def test_when_processes_join(monkeypatch, env, expected):
  from e2urec_jax import distributed
  for name in ('E2UREC_DISTRIBUTED', 'E2UREC_COORDINATOR', 'E2UREC_NUM_PROCESSES', 'JAX_COORDINATOR_ADDRESS',
               'JAX_NUM_PROCESSES', 'TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES'):
    monkeypatch.delenv(name, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert distributed.requested() is expected


def test_bad_switch_is_a_user_error(monkeypatch):
  from e2urec_jax import distributed
  from e2urec_jax.errors import UserError
  monkeypatch.setenv('E2UREC_DISTRIBUTED', 'yes')
  with pytest.raises(UserError, match='E2UREC_DISTRIBUTED'):
    distributed.requested()


if __name__ == '__main__':
  worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])

"""The 'model' mesh axis (c.mesh.model_axis): frozen base and teachers sharded FSDP-style, adapters
replicated. On 8 CPU devices (a subprocess), data=2 x model=4 and data=1 x model=8 give the same
E2URec loss and gradients, train step and eval logits as one device, and the base really is split.

The file is also the subprocess: `python tests/test_fsdp.py WORKDIR`.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def test_fsdp_spec_picks_the_largest_divisible_dimension():
  from jax.sharding import PartitionSpec as P
  from e2urec_jax.train.mesh import fsdp_spec
  assert fsdp_spec((64, 256), 4) == P(None, 'model')
  assert fsdp_spec((256, 64), 4) == P('model')
  assert fsdp_spec((377, 64), 4) == P(None, 'model')  # 377 does not split: the next largest does
  assert fsdp_spec((3, 64, 16), 8) == P(None, 'model')  # stacked teacher adapters: never the stack axis
  assert fsdp_spec((6,), 4) == P()  # nothing divisible: replicated
  assert fsdp_spec((), 4) == P()
  assert fsdp_spec((64, 256), 1) == P()


@pytest.mark.slow
def test_sharded_base_equals_unsharded_on_8_devices(tmp_path):
  out = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300,
                       cwd=REPO, env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'})
  assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
  assert 'OK' in out.stdout, out.stdout


# ---------------------------------------------------------------- the subprocess
def _check_placement(frozen, model_size):
  """Every frozen leaf with a dimension divisible by the 'model' size is split along its largest one."""
  import jax
  from e2urec_jax.train.mesh import MODEL_AXIS
  sharded = 0
  for path, x in jax.tree_util.tree_leaves_with_path(frozen):
    name = jax.tree_util.keystr(path)
    divisible = [d for d, n in enumerate(x.shape) if n % model_size == 0]
    if not divisible:
      assert x.sharding.is_fully_replicated, name
      continue
    dim = max(divisible, key=lambda d: (x.shape[d], -d))
    assert x.sharding.spec[dim] == MODEL_AXIS, (name, x.shape, x.sharding.spec)
    local = list(x.shape)
    local[dim] //= model_size
    assert all(s.data.shape == tuple(local) for s in x.addressable_shards), (name, x.shape)
    sharded += 1
  return sharded


def main(workdir):
  os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  sys.path[:0] = [REPO, HERE]
  from e2urec_jax import distributed
  distributed.add_xla_flag(distributed.CPU_MODEL_AXIS_FLAG)  # what the CLI adds for model_axis > 1
  import jax
  from conftest import CACHE, load_config
  from e2urec_jax.methods import common
  from e2urec_jax.train import inference
  from e2urec_jax.methods.e2urec import e2urec_loss_fn, frozen_teachers
  from e2urec_jax.train import mesh as mesh_lib
  from e2urec_jax.train import steps
  from e2urec_jax.train.context import open_run
  from e2urec_jax.train.paths import run_paths
  from steps_testlib import loss_and_grads
  jax.config.update('jax_compilation_cache_dir', CACHE)
  assert jax.device_count() == 8

  def context(model_axis, devices=None):
    config = load_config('configs/demo.py:test')
    config.progress, config.jax_cache_dir = False, ''
    config.model.scratch.num_layers = 1  # compile time is most of this test
    config.mesh.model_axis = model_axis
    mesh = None if devices is None else mesh_lib.make_mesh(model_axis, devices=devices)
    return open_run(config, run_paths(workdir), mesh=mesh)

  hp = {'lr': np.float32(1e-3), 'weight_decay': np.float32(0.0), 'w': np.float32(0.6), 'alpha': np.float32(2.0),
        'forget_only': np.float32(0.0)}
  results = {}
  for label, model_axis, devices in (('1 device', 1, jax.devices()[:1]), ('data=2 x model=4', 4, None),
                                     ('data=1 x model=8', 8, None)):
    ctx = context(model_axis, devices)
    assert dict(ctx.mesh.shape) == {'data': len(devices or jax.devices()) // model_axis, 'model': model_axis}
    params = ctx.bundle.pretrained_params
    zero = ctx.zero_adapters(params)
    aug = jax.tree.map(lambda x: x + 0.02, ctx.new_adapters(params, 2))
    frozen = ctx.put(frozen_teachers(ctx.base_dtype(params), ctx.put_frozen(aug), ctx.put_frozen(zero)))
    student = jax.tree.map(lambda x: x + 0.01, ctx.new_adapters(params, 1))
    retain, forget = common.split_indices(ctx.data)
    batch = mesh_lib.put_batch(common.paired_batch(ctx.data, retain[:8], forget[:8]), ctx.mesh)
    if model_axis > 1:
      n_base = _check_placement(frozen['base'], model_axis)
      n_teachers = _check_placement(frozen['augmented'], model_axis)
      assert n_base >= len(jax.tree.leaves(params)) // 2, n_base  # the kernels and embeddings at least
      assert n_teachers == len(jax.tree.leaves(aug)), n_teachers
      assert batch['retain']['input_ids'].sharding.spec == mesh_lib.batch_sharding(ctx.mesh).spec
    loss, grads = loss_and_grads(e2urec_loss_fn(ctx.model, True, True, True), ctx.mesh)(
        ctx.put(student), frozen, batch, jax.random.key(0), hp)
    step = steps.make_train_step(e2urec_loss_fn(ctx.model, True, True, True), ctx.mesh)
    trainable, opt_state, _ = step(ctx.put(student), ctx.put(steps.init_opt_state(student)), frozen, batch,
                                   jax.random.key(0), hp)
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves((trainable, opt_state)))
    eval_batch, real = next(inference.iterate_eval(ctx, 'test', np.arange(13), batch_size=16))
    logits = np.asarray(inference.eval_logits_fn(ctx)(frozen['base'], trainable, eval_batch))[:real]
    results[label] = (float(loss), jax.device_get(grads), jax.device_get(trainable), logits)

  (l1, g1, t1, e1) = results['1 device']
  for label, (l, g, t, e) in results.items():
    np.testing.assert_allclose(l, l1, rtol=1e-5, err_msg=label)
    scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(g1))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g1)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale, err_msg=f'{label}: gradients')
    for a, b in zip(jax.tree.leaves(t), jax.tree.leaves(t1)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f'{label}: adapters after a step')
    np.testing.assert_allclose(e, e1, rtol=1e-5, atol=1e-5 * np.abs(e1).max(), err_msg=f'{label}: eval logits')
    print(f'{label}: loss {l:.8f}')
  print('OK')


if __name__ == '__main__':
  main(sys.argv[1])

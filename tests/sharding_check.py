"""Run in a subprocess with 8 CPU devices: the E2URec loss and gradients on a mesh of 8 devices
equal those on 1 device (relative 1e-5). Prints OK or raises."""
import os
import sys

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
os.environ['JAX_PLATFORMS'] = 'cpu'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from e2urec_jax.methods import common  # noqa: E402
from e2urec_jax.methods.e2urec import e2urec_loss_fn, frozen_teachers  # noqa: E402
from e2urec_jax.train import mesh as mesh_lib  # noqa: E402
from e2urec_jax.train.context import open_run  # noqa: E402
from steps_testlib import loss_and_grads  # noqa: E402
from e2urec_jax.train.paths import run_paths  # noqa: E402


def main(workdir, config_path):
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from conftest import load_config
  assert jax.device_count() == 8, jax.devices()
  config = load_config(config_path)
  config.progress = False
  config.jax_cache_dir = ''
  ctx = open_run(config, run_paths(workdir))
  params = ctx.bundle.pretrained_params
  student = ctx.new_adapters(params, 1)
  # Non-zero B so that the gradient w.r.t. A is non-trivial too.
  student = jax.tree.map(lambda x: x + 0.01, student)
  teacher = jax.tree.map(lambda x: x + 0.02, ctx.new_adapters(params, 2))
  zero = ctx.zero_adapters(params)
  retain, forget = common.split_indices(ctx.data)
  batch = common.paired_batch(ctx.data, retain[:16], forget[:16])
  hp = {'lr': 0.0, 'weight_decay': 0.0, 'w': 0.6, 'alpha': 2.0, 'forget_only': 0.0}
  loss_fn = e2urec_loss_fn(ctx.model, True, True, True)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), (mesh_lib.DATA_AXIS,))
    frozen = mesh_lib.put_replicated(frozen_teachers(params, teacher, zero), mesh)
    fn = loss_and_grads(loss_fn, mesh)
    loss, grads = fn(mesh_lib.put_replicated(student, mesh), frozen, mesh_lib.put_batch(batch, mesh),
                     jax.random.key(0), hp)
    results.append((float(loss), jax.device_get(grads)))
  (l1, g1), (l8, g8) = results
  assert abs(l1 - l8) <= 1e-5 * abs(l1), (l1, l8)
  flat1, flat8 = jax.tree.leaves(g1), jax.tree.leaves(g8)
  scale = max(float(np.abs(g).max()) for g in flat1)
  for a, b in zip(flat1, flat8):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)
  print(f'OK loss1={l1:.8f} loss8={l8:.8f} leaves={len(flat1)}')


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])

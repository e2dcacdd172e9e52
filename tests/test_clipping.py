"""Gradient clipping, a compile-time bound per phase group (config.{train,augment,unlearn}.max_grad_norm)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train import steps


def _loss_fn(trainable, frozen, batch, rng, hp):
  del frozen, rng, hp
  pred = batch['x'] @ trainable['w'] + trainable['b']
  return jnp.mean((pred - batch['y']) ** 2), {}


def _run(max_grad_norm=None, reference=None, num_steps=4):
  """Our step clipping at `max_grad_norm` (None: the default), or `reference` (an optax optimizer)."""
  rng = np.random.default_rng(0)
  params = {'w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), 'b': jnp.zeros(2, jnp.float32)}
  batches = [{'x': jnp.asarray(rng.normal(size=(8, 3)) * 5, jnp.float32),
              'y': jnp.asarray(rng.normal(size=(8, 2)) * 5, jnp.float32)} for _ in range(num_steps)]
  hp = {'lr': 0.05, 'weight_decay': 0.01}
  norms = []
  if reference is None:
    mesh = mesh_lib.make_mesh(1, jax.devices()[:1])
    step = (steps.make_train_step(_loss_fn, mesh) if max_grad_norm is None
            else steps.make_train_step(_loss_fn, mesh, max_grad_norm))
    state = steps.init_opt_state(params)
    hp = {k: jnp.float32(v) for k, v in hp.items()}
    for i, batch in enumerate(batches):
      params, state, metrics = step(params, state, {}, batch, jax.random.key(i), hp)
      norms.append(float(metrics['grad_norm']))
  else:
    state = reference.init(params)
    for batch in batches:
      grads = jax.grad(lambda p: _loss_fn(p, None, batch, None, None)[0])(params)
      norms.append(float(optax.tree.norm(grads)))
      updates, state = jax.jit(reference.update)(grads, state, params)
      params = optax.apply_updates(params, updates)
  return jax.device_get(params), norms


def test_max_grad_norm_is_optax_clipping_and_zero_turns_it_off():
  adamw = optax.adamw(0.05, weight_decay=0.01)
  clipped, norms = _run(1.0)
  want, _ = _run(reference=optax.chain(optax.clip_by_global_norm(1.0), adamw))
  assert min(norms) > 1.0  # the bound bites on every step
  for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  default, _ = _run()  # the default bound is 1.0, the step this project always compiled
  for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(clipped)):
    np.testing.assert_array_equal(a, b)
  half, _ = _run(0.5)
  want, _ = _run(reference=optax.chain(optax.clip_by_global_norm(0.5), adamw))
  for a, b in zip(jax.tree.leaves(half), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  unclipped, _ = _run(0.0)
  want, _ = _run(reference=adamw)
  for a, b in zip(jax.tree.leaves(unclipped), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(unclipped['w'], clipped['w'])


def test_optimizer_state_does_not_depend_on_the_bound():
  """No clipping puts optax.identity where the clipping was: the same (empty) state, so one
  checkpoint layout serves every bound."""
  params = {'w': jnp.zeros((2, 2))}
  assert jax.tree.structure(steps.make_optimizer(0.0).init(params)) == \
      jax.tree.structure(steps.make_optimizer(1.0).init(params)) == jax.tree.structure(steps.init_opt_state(params))

"""Pure train steps: `step(trainable, opt_state, frozen, batch, rng, hp) -> (trainable, opt_state, metrics)`.

Only `trainable` is differentiated and only it has optimizer state; `frozen` (the base,
teachers, a reference model) rides along replicated. Learning rate and weight decay are
inputs (`hp`), not constants, so methods that differ only in them share one compiled step.
"""
import jax
import optax

from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train.loop import TimedJit

MAX_GRAD_NORM = 1.0  # as the Hugging Face Trainer the original code used


def make_optimizer() -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(MAX_GRAD_NORM),
      optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0))


def init_opt_state(trainable):
  return make_optimizer().init(trainable)


def _set_hyperparams(opt_state, hp):
  clip, adam = opt_state
  hyper = dict(adam.hyperparams, learning_rate=hp['lr'], weight_decay=hp['weight_decay'])
  return clip, adam._replace(hyperparams=hyper)


def make_train_step(loss_fn, mesh) -> TimedJit:
  """loss_fn(trainable, frozen, batch, rng, hp) -> (loss, aux dict of scalars)."""
  optimizer = make_optimizer()

  def step(trainable, opt_state, frozen, batch, rng, hp):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch, rng, hp)
    opt_state = _set_hyperparams(opt_state, hp)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}

  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  return TimedJit(jax.jit(step, in_shardings=(rep, rep, rep, data, rep, rep),
                          out_shardings=(rep, rep, rep), donate_argnums=(0, 1)))


def loss_and_grads(loss_fn, mesh):
  """The same loss and gradients without the update: for checking sharded == unsharded."""
  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)

  def fn(trainable, frozen, batch, rng, hp):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch, rng, hp)
    return loss, grads

  return jax.jit(fn, in_shardings=(rep, rep, data, rep, rep), out_shardings=(rep, rep))

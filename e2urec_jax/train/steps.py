"""Pure train steps: `step(trainable, opt_state, frozen, batch, rng, hp) -> (trainable, opt_state, metrics)`.

Only `trainable` is differentiated and only it has optimizer state (both replicated);
`frozen` (the base, teachers, a reference model) keeps the placement it was put with:
FSDP-sharded over the mesh's 'model' axis (`Context.put_frozen`) or replicated, so its
`in_shardings` are a pytree read off the argument when the step is lowered. Learning rate
and weight decay are inputs (`hp`), not constants, so methods that differ only in them
share one compiled step. The gradient clipping bound is a compile-time constant
(config.{train,augment,unlearn}.max_grad_norm, 0 = no clipping): the default 1.0 compiles the
very step it always did, so results under it do not move by a bit.
"""
import jax
import optax

from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train.timed_jit import TimedJit

# The configs' default bound (the Hugging Face Trainer's). The original E2URec code does not use
# that Trainer and never clips: its configs set max_grad_norm = 0.
MAX_GRAD_NORM = 1.0
REPLICATED, BATCH, FROZEN = 'replicated', 'batch', 'frozen'  # argument kinds of PlacedJit


def make_optimizer(max_grad_norm: float = MAX_GRAD_NORM) -> optax.GradientTransformation:
  """AdamW after clipping the gradient's global norm to `max_grad_norm` (0: no clipping; the
  identity has the same empty state, so the optimizer state's structure never changes)."""
  clip = optax.clip_by_global_norm(max_grad_norm) if max_grad_norm > 0 else optax.identity()
  return optax.chain(clip, optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0))


def init_opt_state(trainable):
  return make_optimizer().init(trainable)


def _set_hyperparams(opt_state, hp):
  clip, adam = opt_state
  hyper = dict(adam.hyperparams, learning_rate=hp['lr'], weight_decay=hp['weight_decay'])
  return clip, adam._replace(hyperparams=hyper)


class PlacedJit:
  """`jax.jit` with explicit shardings, where an argument of kind FROZEN gets a pytree of
  shardings read off the argument itself (`mesh.frozen_shardings`), one jitted function per
  placement. (Through `TimedJit`, whose cache is keyed by shapes, one step object should
  always see its frozen tree placed the same way; `Context` does that.)

  kinds: per positional argument, REPLICATED, BATCH (rows on 'data') or FROZEN.
  """

  def __init__(self, fn, mesh, kinds, out_shardings, donate_argnums=()):
    self._fn, self._mesh, self._kinds = fn, mesh, tuple(kinds)
    self._out, self._donate = out_shardings, tuple(donate_argnums)
    self._jitted = {}

  def _in_shardings(self, args):
    fixed = {REPLICATED: mesh_lib.replicated(self._mesh), BATCH: mesh_lib.batch_sharding(self._mesh)}
    return tuple(mesh_lib.frozen_shardings(arg, self._mesh) if kind == FROZEN else fixed[kind]
                 for kind, arg in zip(self._kinds, args))

  def _jit_for(self, args):
    shardings = self._in_shardings(args)
    leaves, treedef = jax.tree.flatten(shardings)
    key = (treedef, tuple(leaves))
    if key not in self._jitted:
      self._jitted[key] = jax.jit(self._fn, in_shardings=shardings, out_shardings=self._out,
                                  donate_argnums=self._donate)
    return self._jitted[key]

  def lower(self, *args):
    return self._jit_for(args).lower(*args)

  def __call__(self, *args):
    return self._jit_for(args)(*args)


def make_train_step(loss_fn, mesh, max_grad_norm: float = MAX_GRAD_NORM) -> TimedJit:
  """loss_fn(trainable, frozen, batch, rng, hp) -> (loss, aux dict of scalars); gradients
  clipped to the global norm `max_grad_norm` (0 = not clipped; `grad_norm` is the norm before)."""
  optimizer = make_optimizer(float(max_grad_norm))

  def step(trainable, opt_state, frozen, batch, rng, hp):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch, rng, hp)
    opt_state = _set_hyperparams(opt_state, hp)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}

  rep = mesh_lib.replicated(mesh)
  kinds = (REPLICATED, REPLICATED, FROZEN, BATCH, REPLICATED, REPLICATED)
  return TimedJit(PlacedJit(step, mesh, kinds, out_shardings=(rep, rep, rep), donate_argnums=(0, 1)))

"""Pure train steps: `step(trainable, opt_state, frozen, batch, rng, hp) -> (trainable, opt_state, metrics)`.

Only `trainable` is differentiated and only it has optimizer state (both replicated);
`frozen` (the base, teachers, a reference model) keeps the placement it was put with:
FSDP-sharded over the mesh's 'model' axis (`Context.put_frozen`) or replicated, so its
`in_shardings` are a pytree read off the argument when the step is lowered. Learning rate
and weight decay are inputs (`hp`), not constants, so methods that differ only in them
share one compiled step. So is the gradient clipping bound (`hp['max_grad_norm']`, 0 = no
clipping; config.{train,augment,unlearn}.max_grad_norm).
"""
import jax
import jax.numpy as jnp
import optax

from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train.loop import TimedJit

# The bound when `hp` names none (the configs' default). The Hugging Face Trainer clips at 1.0;
# the original E2URec code does not use it and never clips (config: max_grad_norm = 0).
MAX_GRAD_NORM = 1.0
REPLICATED, BATCH, FROZEN = 'replicated', 'batch', 'frozen'  # argument kinds of PlacedJit


def make_optimizer() -> optax.GradientTransformation:
  # The first slot held optax.clip_by_global_norm; clipping now happens in the step with a traced
  # bound (`clip_gradients`), and identity keeps the optimizer state's structure (resume checkpoints).
  return optax.chain(
      optax.identity(),
      optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0))


def clip_gradients(grads, g_norm, max_norm):
  """optax.clip_by_global_norm's arithmetic (so a bound of 1.0 gives its results bit for bit),
  with a traced bound; max_norm <= 0 leaves the gradients as they are."""
  keep = jnp.logical_or(max_norm <= 0, g_norm < max_norm)
  return jax.tree.map(lambda t: jax.lax.select(keep, t, (t / g_norm.astype(t.dtype)) * max_norm.astype(t.dtype)),
                      grads)


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


def make_train_step(loss_fn, mesh) -> TimedJit:
  """loss_fn(trainable, frozen, batch, rng, hp) -> (loss, aux dict of scalars)."""
  optimizer = make_optimizer()

  def step(trainable, opt_state, frozen, batch, rng, hp):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch, rng, hp)
    g_norm = optax.tree.norm(grads)
    grads = clip_gradients(grads, g_norm, jnp.asarray(hp.get('max_grad_norm', MAX_GRAD_NORM), jnp.float32))
    opt_state = _set_hyperparams(opt_state, hp)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return trainable, opt_state, {'loss': loss, 'grad_norm': g_norm, **aux}

  rep = mesh_lib.replicated(mesh)
  kinds = (REPLICATED, REPLICATED, FROZEN, BATCH, REPLICATED, REPLICATED)
  return TimedJit(PlacedJit(step, mesh, kinds, out_shardings=(rep, rep, rep), donate_argnums=(0, 1)))


def loss_and_grads(loss_fn, mesh) -> PlacedJit:
  """The same loss and gradients without the update: for checking sharded == unsharded."""
  rep = mesh_lib.replicated(mesh)

  def fn(trainable, frozen, batch, rng, hp):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch, rng, hp)
    return loss, grads

  return PlacedJit(fn, mesh, (REPLICATED, FROZEN, BATCH, REPLICATED, REPLICATED), out_shardings=(rep, rep))

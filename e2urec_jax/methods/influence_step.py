"""Influence-function unlearning's computation (methods/influence.py declares the method and says
what it approximates): the loss and its Hessian-vector products, conjugate gradients, the phase.

Apart from the declaration because it needs JAX at import, and the declaration is read by the
config (which loads no JAX) while this module is read only when the method runs.
"""
import dataclasses
import time
from typing import Any, Callable

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax import losses, seeds
from e2urec_jax.data import make_batch
from e2urec_jax.methods import common, llmrec
from e2urec_jax.models import answer_logits
from e2urec_jax.train import artifacts, heldout, inference, mesh as mesh_lib
from e2urec_jax.train.context import peak_memory_bytes
from e2urec_jax.train.paths import ORIGINAL

RTOL = 1e-6  # CG stops when |residual| <= RTOL * |g|


# ------------------------------------------------------------------ the loss and its derivatives
def loss_sum(model, params, adapters, batch):
  """Σ over the batch's rows of each row's mean answer-token CE (padding rows add 0)."""
  logits = answer_logits(model, params, batch, adapters=adapters)  # [batch, answer, vocab]
  per_row = losses.answer_cross_entropy(logits, batch['answer_labels'], batch['answer_mask'], per_example=True)
  return jnp.sum(per_row)


def hvp(loss, point, frozen, v, batch):
  """H·v of loss(point, frozen, batch) at `point`: forward-over-reverse (jvp of grad)."""
  return jax.jvp(lambda p: jax.grad(loss)(p, frozen, batch), (point,), (v,))[1]


@dataclasses.dataclass
class Space:
  """The parameters the solve runs in: `point` (where the derivatives are taken), `frozen`
  (what else the loss reads), `loss(point, frozen, batch)` and `weights(delta)` -> (params,
  adapters or None): the model with the (already scaled) update `delta` applied."""
  kind: str
  point: Any
  frozen: Any
  loss: Callable
  weights: Callable


def full_space(model, params) -> Space:
  """Every weight of `params`: the update is added to them."""

  def loss(p, frozen, batch):
    return loss_sum(model, p, None, batch)

  def weights(delta):
    return jax.tree.map(lambda w, d: (w + d).astype(w.dtype), params, delta), None
  return Space('full', params, {}, loss, weights)


def _flat(tree) -> dict:
  return traverse_util.flatten_dict(tree)


def adapters_of(a_flat: dict, b_flat: dict):
  """The adapters tree from its flat A and B leaves ({path + ('lora_a',): A}, {path + ('lora_b',): B})."""
  return traverse_util.unflatten_dict({**a_flat, **b_flat})


def lora_space(model, base, adapters) -> Space:
  """The B matrices of `adapters` (A fixed) on the frozen `base`, at B = 0."""
  flat = _flat(adapters)
  a = {k: jnp.asarray(v) for k, v in flat.items() if k[-1] == 'lora_a'}
  b0 = {k: jnp.zeros_like(jnp.asarray(v)) for k, v in flat.items() if k[-1] == 'lora_b'}

  def loss(b, frozen, batch):
    return loss_sum(model, frozen['base'], adapters_of(frozen['a'], b), batch)

  def weights(delta):
    return base, adapters_of(a, delta)
  return Space('lora', b0, {'base': base, 'a': a}, loss, weights)


# ------------------------------------------------------------------ pytree algebra and CG
def _tree_fns():

  def dot(x, y):
    return sum(jnp.vdot(a.astype(jnp.float32), b.astype(jnp.float32)) for a, b in
               zip(jax.tree.leaves(x), jax.tree.leaves(y)))

  def axpy(alpha, x, y):  # alpha * x + y
    return jax.tree.map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)
  return jax.jit(dot), jax.jit(axpy)


def conjugate_gradient(matvec, b, *, damping: float, iters: int, rtol: float = RTOL, on_iterate=None):
  """x ≈ (A + damping·I)⁻¹ b by CG from x = 0, A = matvec (symmetric). on_iterate(k, x, last) -> True
  stops after iterate k (last: CG ends there anyway, by its iteration count or convergence). Returns (x, info): iterations run, relative residual, why it stopped
  ('iterations', 'converged', 'negative_curvature': a direction with p·(A+λI)p <= 0, not taken, or
  'auto': on_iterate asked)."""
  dot, axpy = _tree_fns()
  x = jax.tree.map(jnp.zeros_like, b)
  r, p = b, b
  rs = float(dot(r, r))
  b_norm = max(np.sqrt(rs), 1e-30)
  info = {'iterations': 0, 'residual': 1.0, 'stop': 'iterations'}
  if rs == 0.0:
    return x, {**info, 'residual': 0.0, 'stop': 'converged'}
  for k in range(1, iters + 1):
    ap = axpy(damping, p, matvec(p))
    curvature = float(dot(p, ap))
    if not curvature > 0.0:
      info['stop'] = 'negative_curvature'
      break
    alpha = rs / curvature
    x = axpy(alpha, p, x)
    r = axpy(-alpha, ap, r)
    rs_new = float(dot(r, r))
    info.update(iterations=k, residual=float(np.sqrt(rs_new) / b_norm))
    converged = np.sqrt(rs_new) <= rtol * b_norm
    if on_iterate is not None and on_iterate(k, x, bool(converged or k == iters)):
      info['stop'] = 'auto'
      break
    if converged:
      info['stop'] = 'converged'
      break
    p = axpy(rs_new / rs, p, r)
    rs = rs_new
  return x, info


class Derivatives:
  """The forget gradient Σ_F ∇ℓ_i and the retained sample's mean-Hessian products, over fixed
  device batches of one shape (one compilation of each function, timed apart: `compile_s`)."""

  def __init__(self, space: Space, retain_batches: list, forget_batches: list, num_retain: int):
    self.space, self.retain, self.forget, self.num_retain = space, retain_batches, forget_batches, num_retain
    start = time.perf_counter()
    args = (space.point, space.frozen)
    self._grad = jax.jit(jax.grad(space.loss)).lower(*args, forget_batches[0]).compile()
    self._hvp = jax.jit(lambda p, f, v, b: hvp(space.loss, p, f, v, b)).lower(
        *args, space.point, retain_batches[0]).compile()
    self.compile_s = time.perf_counter() - start
    _, self._axpy = _tree_fns()

  def forget_gradient(self):
    total = None
    for batch in self.forget:
      g = self._grad(self.space.point, self.space.frozen, batch)
      total = g if total is None else self._axpy(1.0, g, total)
    return total

  def hessian_product(self, v):
    """(1/N_R) Σ over the retained sample of ∇²ℓ_i · v."""
    total = None
    for batch in self.retain:
      hv = self._hvp(self.space.point, self.space.frozen, v, batch)
      total = hv if total is None else self._axpy(1.0, hv, total)
    return jax.tree.map(lambda t: t / self.num_retain, total)


def influence_update(derivs: Derivatives, *, n: int, damping: float, iters: int, scale: float = 1.0,
                     on_iterate=None):
  """(scale/n) · (H + λI)⁻¹ Σ_F ∇ℓ_i and CG's info. on_iterate(k, scaled update, last) as in CG."""
  g = derivs.forget_gradient()
  factor = float(scale) / float(n)
  scaled = lambda x: jax.tree.map(lambda t: t * factor, x)  # noqa: E731
  hook = None if on_iterate is None else (lambda k, x, last: on_iterate(k, scaled(x), last))
  x, info = conjugate_gradient(derivs.hessian_product, g, damping=damping, iters=iters, on_iterate=hook)
  return scaled(x), info


def auto_checks(iters: int) -> set:
  """CG iterations at which the retrain-free rule scores the model: 1, 2, 4, ... and `iters`."""
  out, k = {iters}, 1
  while k < iters:
    out.add(k)
    k *= 2
  return out


# ------------------------------------------------------------------ the phase
def _batches(ctx, rows_of_sets: list, batch_size: int) -> list:
  """Device batches of `batch_size` rows (the last padded) for each set of train rows, all of one
  input length (the longest bucket any of them needs), so each function compiles once."""
  chunks = [[rows[i:i + batch_size] for i in range(0, len(rows), batch_size)] for rows in rows_of_sets]
  hosts = [[make_batch(ctx.data, 'train', c, batch_size=batch_size) for c in cs] for cs in chunks]
  length = max(h['input_ids'].shape[1] for hs in hosts for h in hs)
  out = []
  for cs, hs in zip(chunks, hosts):
    out.append([mesh_lib.put_batch(h if h['input_ids'].shape[1] == length else
                                   make_batch(ctx.data, 'train', c, batch_size=batch_size, length=length), ctx.mesh)
                for c, h in zip(cs, hs)])
  return out


def _space(ctx, section, original, seed: int, method: str) -> Space:
  if section.params == 'full':
    return full_space(ctx.model, ctx.put(original))
  adapters = ctx.new_adapters(original, seeds.derive(seed, method, 'init'))  # fresh: B = 0
  return lora_space(ctx.model, ctx.put(ctx.base_dtype(original)), ctx.put(adapters))


def unlearn(ctx, name, section, seed, callbacks=(), *, method: str) -> dict:
  """The influence step from the original; publishes the model, writes the stats (influence.py's
  MethodSpec.run). `method`: the registered name, whose seeds (seeds.derive) the phase draws."""
  llmrec.ensure_original(ctx, callbacks)
  start = time.perf_counter()
  original = ctx.load_params(ORIGINAL)
  retain, forget = common.split_indices(ctx.data)
  n = len(ctx.data.splits['train'].label)
  sample = np.sort(np.random.default_rng(seeds.derive(seed, method, 'retain_batches')).permutation(retain)
                   [:int(section.retain_samples)])
  batch_size = max(ctx.num_devices, int(section.batch_size) - int(section.batch_size) % ctx.num_devices)
  retain_batches, forget_batches = _batches(ctx, [sample, forget], batch_size)
  space = _space(ctx, section, original, seed, method)
  derivs = Derivatives(space, retain_batches, forget_batches, len(sample))

  un = ctx.config.unlearn
  mode = str(un.get('auto', '') or '')
  checks_s, best = 0.0, {'gap': None, 'k': None, 'delta': None, 'bad': 0}
  on_iterate = None
  if mode:
    rows = heldout.require(heldout.HeldoutRows(ctx), "config.unlearn.auto='heldout_mia'")
    zeros = ctx.zero_adapters(original)
    checks, checked = auto_checks(int(section.cg_iters)), set()

    def on_iterate(k, delta, last):
      nonlocal checks_s
      if k not in checks and not last:
        return False
      t = time.perf_counter()
      checked.add(k)
      params, adapters = space.weights(delta)
      gap = abs(rows.auc(ctx, inference.SingleModel(ctx, params, zeros if adapters is None else adapters))
                - heldout.TARGET)
      print(f'{name}: CG iteration {k}: held-out MIA gap {gap:.4f}', flush=True)
      if best['gap'] is None or gap < best['gap']:
        best.update(gap=gap, k=k, delta=delta, bad=0)
      else:
        best['bad'] += 1
      checks_s += time.perf_counter() - t
      return best['bad'] > int(un.auto_patience)

  delta, info = influence_update(derivs, n=n, damping=float(section.damping), iters=int(section.cg_iters),
                                 scale=float(section.scale), on_iterate=on_iterate)
  chosen = info['iterations']
  if mode and chosen > 0 and chosen not in checked:
    on_iterate(chosen, delta, True)  # CG broke down after an iterate that was not checked: check it
  if mode and best['delta'] is not None:
    delta, chosen = best['delta'], best['k']
  delta = jax.device_get(delta)
  elapsed = time.perf_counter() - start

  path = ctx.model_dir(name)
  params, adapters = space.weights(delta)
  if adapters is None:
    size = artifacts.save_full(ctx.model, jax.device_get(params), path)
    solved = ctx.bundle.num_base_params
  else:
    size = artifacts.save_adapters(jax.device_get(adapters), path, base_dir=ctx.model_dir(ORIGINAL),
                                   lora=ctx.bundle.lora_meta)
    solved = sum(int(np.size(v)) for v in jax.tree.leaves(delta))
  norm = float(np.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64)))) for v in jax.tree.leaves(delta))))
  stats = {
      'time_s': elapsed, 'compile_s': derivs.compile_s, 'unlearn_time_s': elapsed - derivs.compile_s - checks_s,
      'callbacks_s': 0.0, 'steps': int(chosen), 'examples_per_s': None,
      'trainable_params': int(solved), 'trainable_fraction': solved / max(ctx.bundle.num_base_params, 1),
      'checkpoint_bytes': int(size), 'peak_memory_bytes': peak_memory_bytes(),
      'best_valid': best['gap'], 'best_step': best['k'], 'stopped_early': info['stop'] == 'auto',
      'final_loss': None, 'seed': seed, 'params': section.params, 'damping': float(section.damping),
      'scale': float(section.scale), 'cg_iterations': info['iterations'], 'cg_residual': info['residual'],
      'cg_stop': info['stop'], 'update_norm': norm, 'retain_samples': int(len(sample)),
      'forget_samples': int(len(forget)), 'train_samples': int(n), 'checks_s': checks_s,
      **({'auto': mode} if mode else {})}
  artifacts.write_done(ctx.phase_dir(name), stats)
  return stats

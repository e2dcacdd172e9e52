"""Influence-function unlearning, as LLMEraser (Ding et al., ICLR 2025) does on LoRA recommenders:
one Newton step that removes the forget samples' influence, no training.

The original minimises L(θ) = (1/n) Σ_i ℓ_i(θ) over its n training samples (ℓ_i: a sample's
answer-token cross-entropy, losses.answer_cross_entropy per example). Dropping the forget set F
moves the minimiser, to first order, by

    Δθ = (1/n) · (H + λI)⁻¹ · Σ_{i∈F} ∇ℓ_i(θ),      θ' = θ + scale · Δθ,

with H the Hessian of the retained loss (the mean over retained samples of ∇²ℓ_i), λ the
damping. (H + λI)⁻¹ g is solved by conjugate gradients on Hessian-vector products,
forward-over-reverse (`jax.jvp` of `jax.grad`), over a fixed seeded sample of the retained set;
H is never formed. Its cost, the time of the forget gradient and the CG solve (compilation
apart), is the method's `time_s` / `unlearn_time_s`, recorded like every method's.

What is approximated, and where:
- The influence step is exact only for a strictly convex loss at its minimum; the original is
  a network at wherever early stopping left it (its gradient is not 0 there). The step is a
  local, first-order correction, and `scale` multiplies it.
- H is the retained loss's Hessian on `retain_samples` random retained samples (seeded by the
  run's seed), not on all of them; the factor is 1/n (n: the train split the original learnt,
  retain + forget) as in Koh & Liang's formula. The exact leave-F-out Newton step on the retained
  objective would be 1/(n - |F|); the difference is |F|/n (a few %), inside `scale`.
- ℓ_i is the per-sample mean over answer tokens; training takes the mean over a batch's tokens.
  The two are equal when every answer has the same number of tokens (Yes/No answers do, up to
  the tokenizer).
- H is not positive definite for a network; λ makes it so only when it exceeds the most
  negative eigenvalue. CG stops at a direction of non-positive curvature (recorded as
  'cg_stop': 'negative_curvature'); a larger damping avoids it. CG runs `cg_iters` iterations
  or until the residual is 1e-6 of |g|; fewer iterations are a smaller, smoother step (CG's
  iterates grow in norm from 0), which is what the retrain-free rule below chooses among.
- Dropout is off (the deterministic model, as evaluation runs it); the model's compute dtype
  is config.model.dtype (fp32 on CPU; bf16 on an accelerator makes the HVPs noisier).

Which parameters (`params`):
- 'lora' (default): fresh LoRA adapters on the original (config.lora's r, alpha, targets): A
  random (seeded), B = 0, so the start is exactly the original. At B = 0 the gradient with
  respect to A is 0 (the update x·A·B has ∂/∂A = x^T·(∂L/∂y)·B^T = 0), and so is the A-A block
  of the Hessian: only the A-B cross terms are non-zero, which makes the (A, B) Hessian
  indefinite and its solve meaningless. So the solve is in the space of B with A fixed: the
  update of each target kernel W is s·A·ΔB (s = alpha/r), a Newton step restricted to the
  rank-r column space the random A spans (a random-subspace, "sketched" Newton step; the
  B-Hessian is s²·Aᵀ H_W A per kernel pair). It scales: the solve's dimension is r·d_out per
  target kernel, and the model is published as adapters, like E2URec. config.lora.init_from
  does not apply: the step is taken at the original, so B starts at 0.
- 'full': every weight of the original (the general case: the exact influence step of the
  whole model), published as full weights. Its HVPs hold a few copies of the model: for tiny
  models.

The retrain-free stop (config.unlearn.auto='heldout_mia', methods/auto_stop.py's rule) picks
the CG iteration count: the held-out membership gap |AUC - 0.5| (train/heldout.py) of the model
θ + scale·Δθ_k is scored at iterations k = 1, 2, 4, 8, ... and at the last one; the iterate with
the smallest gap is published, and CG stops after unlearn.auto_patience checks without a smaller
one. unlearn.auto_every (a number of training steps) does not apply to CG iterations. The
checks count in time_s, not in unlearn_time_s, as in the methods trained by steps. Training
callbacks (train/callbacks.py) see no steps: there are none.
"""
import dataclasses
import time
from typing import Any, Callable

import numpy as np

from e2urec_jax import rules, seeds
from e2urec_jax.methods.spec import MethodSpec, register

NAME = 'influence'
PARAMS = ('lora', 'full')
CURVATURES = ('gauss_newton', 'hessian')
RTOL = 1e-6  # CG stops when |residual| <= RTOL * |g|


# ------------------------------------------------------------------ the loss and its derivatives
def answer_weights(mask):
  """Each answer token's weight in the loss: 1 / its row's answer tokens (0 at padding).  # [batch, answer]"""
  import jax.numpy as jnp
  mask = jnp.asarray(mask, jnp.float32)
  return mask / jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)


def rows_loss(logits, batch):
  """Σ over the batch's rows of each row's mean answer-token CE (padding rows add 0)."""
  import jax.numpy as jnp

  from e2urec_jax import losses
  per_row = losses.answer_cross_entropy(logits, batch['answer_labels'], batch['answer_mask'], per_example=True)
  return jnp.sum(per_row)


def hvp(loss, point, frozen, v, batch):
  """H·v of loss(point, frozen, batch) at `point`: forward-over-reverse (jvp of grad)."""
  import jax
  return jax.jvp(lambda p: jax.grad(loss)(p, frozen, batch), (point,), (v,))[1]


def softmax_hessian_product(logits, u, weights):
  """w·(diag(p) − ppᵀ)·u at every answer position: the Hessian of the weighted softmax
  cross-entropy in the logits (the same whatever the label) times u.  # [batch, answer, vocab]"""
  import jax
  import jax.numpy as jnp
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  u = jnp.asarray(u, jnp.float32)
  return weights[..., None] * probs * (u - jnp.sum(probs * u, axis=-1, keepdims=True))


def ggn_vp(logits_fn, point, frozen, v, batch):
  """G·v = Jᵀ H_out J v of rows_loss(logits_fn(point, frozen, batch)), J the logits' Jacobian
  in `point`: J v by linearising the logits, H_out in logit space, Jᵀ by transposing the
  linearisation (one forward pass, its tangent and its transpose; G is never formed)."""
  import jax
  logits, jvp_fn = jax.linearize(lambda p: logits_fn(p, frozen, batch), point)
  u = softmax_hessian_product(logits, jvp_fn(v), answer_weights(batch['answer_mask'])).astype(logits.dtype)
  return jax.linear_transpose(jvp_fn, point)(u)[0]


@dataclasses.dataclass
class Space:
  """The parameters the solve runs in: `point` (where the derivatives are taken), `frozen`
  (what else the model reads), `logits(point, frozen, batch)` (the answer logits, [batch,
  answer, vocab]) and `weights(delta)` -> (params, adapters or None): the model with the
  (already scaled) update `delta` applied."""
  kind: str
  point: Any
  frozen: Any
  logits: Callable
  weights: Callable

  def loss(self, point, frozen, batch):
    return rows_loss(self.logits(point, frozen, batch), batch)


def full_space(model, params) -> Space:
  """Every weight of `params`: the update is added to them."""
  import jax

  from e2urec_jax.models import answer_logits

  def logits(p, frozen, batch):
    return answer_logits(model, p, batch)

  def weights(delta):
    return jax.tree.map(lambda w, d: (w + d).astype(w.dtype), params, delta), None
  return Space('full', params, {}, logits, weights)


def _flat(tree) -> dict:
  from flax import traverse_util
  return traverse_util.flatten_dict(tree)


def adapters_of(a_flat: dict, b_flat: dict):
  """The adapters tree from its flat A and B leaves ({path + ('lora_a',): A}, {path + ('lora_b',): B})."""
  from flax import traverse_util
  return traverse_util.unflatten_dict({**a_flat, **b_flat})


def lora_space(model, base, adapters) -> Space:
  """The B matrices of `adapters` (A fixed) on the frozen `base`, at B = 0."""
  import jax.numpy as jnp

  from e2urec_jax.models import answer_logits
  flat = _flat(adapters)
  a = {k: jnp.asarray(v) for k, v in flat.items() if k[-1] == 'lora_a'}
  b0 = {k: jnp.zeros_like(jnp.asarray(v)) for k, v in flat.items() if k[-1] == 'lora_b'}

  def logits(b, frozen, batch):
    return answer_logits(model, frozen['base'], batch, adapters=adapters_of(frozen['a'], b))

  def weights(delta):
    return base, adapters_of(a, delta)
  return Space('lora', b0, {'base': base, 'a': a}, logits, weights)


# ------------------------------------------------------------------ pytree algebra and CG
def _tree_fns():
  import jax
  import jax.numpy as jnp

  def dot(x, y):
    return sum(jnp.vdot(a.astype(jnp.float32), b.astype(jnp.float32)) for a, b in
               zip(jax.tree.leaves(x), jax.tree.leaves(y)))

  def axpy(alpha, x, y):  # alpha * x + y
    return jax.tree.map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)
  return jax.jit(dot), jax.jit(axpy)


def conjugate_gradient(matvec, b, *, damping: float, iters: int, rtol: float = RTOL, on_iterate=None):
  """x ≈ (A + damping·I)⁻¹ b by CG from x = 0, A = matvec (symmetric). on_iterate(k, x, last) -> True
  stops after iterate k (last: CG ends there anyway, by its iteration count or convergence).
  Returns (x, info): iterations run, the last iterate's relative residual |r|/|b|, every
  iterate's ('residuals'), and why it stopped ('iterations', 'converged', 'negative_curvature': a
  direction with p·(A+λI)p <= 0, not taken, or 'auto': on_iterate asked)."""
  import jax
  import jax.numpy as jnp
  dot, axpy = _tree_fns()
  x = jax.tree.map(jnp.zeros_like, b)
  r, p = b, b
  rs = float(dot(r, r))
  b_norm = max(np.sqrt(rs), 1e-30)
  info = {'iterations': 0, 'residual': 1.0, 'residuals': [], 'stop': 'iterations'}
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
    info['residuals'].append(info['residual'])
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
  """The forget gradient Σ_F ∇ℓ_i and the retained sample's mean curvature products (`curvature`:
  'gauss_newton', G·v, or 'hessian', H·v), over fixed device batches of one shape (one
  compilation of each function, timed apart: `compile_s`)."""

  def __init__(self, space: Space, retain_batches: list, forget_batches: list, num_retain: int,
               curvature: str = 'gauss_newton'):
    import jax
    if curvature not in CURVATURES:
      raise ValueError(f'curvature must be one of {CURVATURES}, not {curvature!r}')
    self.space, self.retain, self.forget, self.num_retain = space, retain_batches, forget_batches, num_retain
    start = time.perf_counter()
    args = (space.point, space.frozen)
    self._grad = jax.jit(jax.grad(space.loss)).lower(*args, forget_batches[0]).compile()
    product = ((lambda p, f, v, b: ggn_vp(space.logits, p, f, v, b)) if curvature == 'gauss_newton' else
               (lambda p, f, v, b: hvp(space.loss, p, f, v, b)))
    self._product = jax.jit(product).lower(*args, space.point, retain_batches[0]).compile()
    self.compile_s = time.perf_counter() - start
    _, self._axpy = _tree_fns()

  def forget_gradient(self):
    total = None
    for batch in self.forget:
      g = self._grad(self.space.point, self.space.frozen, batch)
      total = g if total is None else self._axpy(1.0, g, total)
    return total

  def curvature_product(self, v):
    """(1/N_R) Σ over the retained sample of G_i·v (or ∇²ℓ_i·v)."""
    import jax
    total = None
    for batch in self.retain:
      hv = self._product(self.space.point, self.space.frozen, v, batch)
      total = hv if total is None else self._axpy(1.0, hv, total)
    return jax.tree.map(lambda t: t / self.num_retain, total)


def influence_update(derivs: Derivatives, *, n: int, damping: float, iters: int, scale: float = 1.0,
                     on_iterate=None):
  """(scale/n) · (C + λI)⁻¹ Σ_F ∇ℓ_i (C: derivs' curvature) and CG's info. on_iterate(k, scaled update, last) as in CG."""
  import jax
  g = derivs.forget_gradient()
  factor = float(scale) / float(n)
  scaled = lambda x: jax.tree.map(lambda t: t * factor, x)  # noqa: E731
  hook = None if on_iterate is None else (lambda k, x, last: on_iterate(k, scaled(x), last))
  x, info = conjugate_gradient(derivs.curvature_product, g, damping=damping, iters=iters, on_iterate=hook)
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
  from e2urec_jax.data import make_batch
  from e2urec_jax.train import mesh as mesh_lib
  chunks = [[rows[i:i + batch_size] for i in range(0, len(rows), batch_size)] for rows in rows_of_sets]
  hosts = [[make_batch(ctx.data, 'train', c, batch_size=batch_size) for c in cs] for cs in chunks]
  length = max(h['input_ids'].shape[1] for hs in hosts for h in hs)
  out = []
  for cs, hs in zip(chunks, hosts):
    out.append([mesh_lib.put_batch(h if h['input_ids'].shape[1] == length else
                                   make_batch(ctx.data, 'train', c, batch_size=batch_size, length=length), ctx.mesh)
                for c, h in zip(cs, hs)])
  return out


def _space(ctx, section, original, seed: int) -> Space:
  if section.params == 'full':
    return full_space(ctx.model, ctx.put(original))
  adapters = ctx.new_adapters(original, seeds.derive(seed, NAME, 'init'))  # fresh: B = 0
  return lora_space(ctx.model, ctx.put(ctx.base_dtype(original)), ctx.put(adapters))


def unlearn_influence(ctx, name, section, seed, callbacks=()) -> dict:
  """MethodSpec.run: the influence step from the original; publishes the model, writes the stats."""
  import jax

  from e2urec_jax.methods import common, llmrec
  from e2urec_jax.train import artifacts, heldout, inference
  from e2urec_jax.train.context import peak_memory_bytes
  from e2urec_jax.train.paths import ORIGINAL
  llmrec.ensure_original(ctx, callbacks)
  start = time.perf_counter()
  original = ctx.load_params(ORIGINAL)
  retain, forget = common.split_indices(ctx.data)
  n = len(ctx.data.splits['train'].label)
  sample = np.sort(np.random.default_rng(seeds.derive(seed, NAME, 'retain_batches')).permutation(retain)
                   [:int(section.retain_samples)])
  batch_size = max(ctx.num_devices, int(section.batch_size) - int(section.batch_size) % ctx.num_devices)
  retain_batches, forget_batches = _batches(ctx, [sample, forget], batch_size)
  space = _space(ctx, section, original, seed)
  derivs = Derivatives(space, retain_batches, forget_batches, len(sample), str(section.curvature))

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
      'scale': float(section.scale), 'curvature': str(section.curvature), 'cg_iterations': info['iterations'],
      'cg_residual': info['residual'], 'cg_residuals': info['residuals'], 'cg_stop': info['stop'],
      'cg_negative_curvature': info['stop'] == 'negative_curvature',
      'cg_chosen_residual': info['residuals'][chosen - 1] if chosen > 0 else 1.0, 'update_norm': norm, 'retain_samples': int(len(sample)),
      'forget_samples': int(len(forget)), 'train_samples': int(n), 'checks_s': checks_s,
      **({'auto': mode} if mode else {})}
  artifacts.write_done(ctx.phase_dir(name), stats)
  return stats


SPEC = register(MethodSpec(
    name=NAME,
    summary='influence-function step (LLMEraser): (1/n)(G+λI)⁻¹Σ_F∇ℓ by CG on Gauss-Newton products, no training',
    defaults={
        'params': 'lora',  # 'lora': solve for fresh adapters' B (A fixed) on the original; 'full': every weight.
        # The curvature C of the step (C + λI)⁻¹: 'gauss_newton', the generalised Gauss-Newton matrix
        # Jᵀ H_out J of the retained answer-token CE (positive semi-definite: with λ > 0, CG converges);
        # 'hessian', the retained loss's Hessian (indefinite at a trained network: CG stops at the
        # first direction of negative curvature, after an iteration or so, a scaled gradient step).
        'curvature': 'gauss_newton',
        'damping': 0.01,  # λ added to the retained loss's Hessian: > 0 (larger: smaller, safer step).
        'retain_samples': 1024,  # Retained samples (seeded) whose mean Hessian is H.
        'cg_iters': 20,  # Conjugate-gradient iterations (at most; the retrain-free stop may pick fewer).
        'batch_size': 32,  # Samples per gradient / Hessian-vector-product batch.
        'scale': 1.0,  # Multiplier on the influence update (1 = the first-order estimate).
    },
    rules={'params': rules.one_of(*PARAMS), 'curvature': rules.one_of(*CURVATURES), 'damping': rules.POSITIVE, 'retain_samples': rules.POSITIVE_INT,
           'cg_iters': rules.POSITIVE_INT, 'batch_size': rules.POSITIVE_INT, 'scale': rules.POSITIVE},
    trainable='lora', run=unlearn_influence, seeded=True, chainable=True, auto_stop=True,
    # Run where config.unlearn.methods names it (not yet in the default list the demo's claims use).
    in_default=False))

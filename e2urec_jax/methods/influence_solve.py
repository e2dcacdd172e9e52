"""The influence step's linear algebra (methods/influence.py has the method and its maths): the
answer-token loss of a parameter space (LoRA's B, or every weight), its Hessian- and
Gauss-Newton-vector products, conjugate gradients on pytrees, and the damped solve
(scale/n)·(C + λI)⁻¹ Σ_F ∇ℓ over fixed device batches."""
import dataclasses
import time
from typing import Any, Callable

import numpy as np

CURVATURES = ('gauss_newton', 'hessian')
RTOL = 1e-6  # CG stops when |residual| <= RTOL * |g|


# ------------------------------------------------------------------ the loss and its derivatives
def answer_weights(mask):
  """Each answer token's weight in the loss: 1 / its row's answer tokens (0 at padding).  # [batch, answer]"""
  import jax.numpy as jnp  # no JAX in config
  mask = jnp.asarray(mask, jnp.float32)
  return mask / jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)


def rows_loss(logits, batch):
  """Σ over the batch's rows of each row's mean answer-token CE (padding rows add 0)."""
  import jax.numpy as jnp  # no JAX in config

  from e2urec_jax import losses  # no JAX in config
  per_row = losses.answer_cross_entropy(logits, batch['answer_labels'], batch['answer_mask'], per_example=True)
  return jnp.sum(per_row)


def hvp(loss, point, frozen, v, batch):
  """H·v of loss(point, frozen, batch) at `point`: forward-over-reverse (jvp of grad)."""
  import jax  # no JAX in config
  return jax.jvp(lambda p: jax.grad(loss)(p, frozen, batch), (point,), (v,))[1]


def softmax_hessian_product(logits, u, weights):
  """w·(diag(p) − ppᵀ)·u at every answer position: the Hessian of the weighted softmax
  cross-entropy in the logits (the same whatever the label) times u.  # [batch, answer, vocab]"""
  import jax  # no JAX in config
  import jax.numpy as jnp  # no JAX in config
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  u = jnp.asarray(u, jnp.float32)
  return weights[..., None] * probs * (u - jnp.sum(probs * u, axis=-1, keepdims=True))


def ggn_vp(logits_fn, point, frozen, v, batch):
  """G·v = Jᵀ H_out J v of rows_loss(logits_fn(point, frozen, batch)), J the logits' Jacobian
  in `point`: J v by linearising the logits, H_out in logit space, Jᵀ by transposing the
  linearisation (one forward pass, its tangent and its transpose; G is never formed)."""
  import jax  # no JAX in config
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
  import jax  # no JAX in config

  from e2urec_jax.models import answer_logits  # no JAX in config

  def logits(p, frozen, batch):
    return answer_logits(model, p, batch)

  def weights(delta):
    return jax.tree.map(lambda w, d: (w + d).astype(w.dtype), params, delta), None
  return Space('full', params, {}, logits, weights)


def _flat(tree) -> dict:
  from flax import traverse_util  # no JAX in config
  return traverse_util.flatten_dict(tree)


def adapters_of(a_flat: dict, b_flat: dict):
  """The adapters tree from its flat A and B leaves ({path + ('lora_a',): A}, {path + ('lora_b',): B})."""
  from flax import traverse_util  # no JAX in config
  return traverse_util.unflatten_dict({**a_flat, **b_flat})


def lora_space(model, base, adapters) -> Space:
  """The B matrices of `adapters` (A fixed) on the frozen `base`, at B = 0."""
  import jax.numpy as jnp  # no JAX in config

  from e2urec_jax.models import answer_logits  # no JAX in config
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
  import jax  # no JAX in config
  import jax.numpy as jnp  # no JAX in config

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
  import jax  # no JAX in config
  import jax.numpy as jnp  # no JAX in config
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
    import jax  # no JAX in config
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
    import jax  # no JAX in config
    total = None
    for batch in self.retain:
      hv = self._product(self.space.point, self.space.frozen, v, batch)
      total = hv if total is None else self._axpy(1.0, hv, total)
    return jax.tree.map(lambda t: t / self.num_retain, total)


def influence_update(derivs: Derivatives, *, n: int, damping: float, iters: int, scale: float = 1.0,
                     on_iterate=None):
  """(scale/n) · (C + λI)⁻¹ Σ_F ∇ℓ_i (C: derivs' curvature) and CG's info. on_iterate(k, scaled update, last) as in CG."""
  import jax  # no JAX in config
  g = derivs.forget_gradient()
  factor = float(scale) / float(n)
  scaled = lambda x: jax.tree.map(lambda t: t * factor, x)  # noqa: E731
  hook = None if on_iterate is None else (lambda k, x, last: on_iterate(k, scaled(x), last))
  x, info = conjugate_gradient(derivs.curvature_product, g, damping=damping, iters=iters, on_iterate=hook)
  return scaled(x), info

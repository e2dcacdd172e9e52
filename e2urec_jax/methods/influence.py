"""Influence-function unlearning, as LLMEraser (Ding et al., ICLR 2025) does on LoRA recommenders:
one Newton step that removes the forget samples' influence, no training.

The original minimises L(θ) = (1/n) Σ_i ℓ_i(θ) over its n training samples (ℓ_i: a sample's
answer-token cross-entropy, losses.answer_cross_entropy per example). Dropping the forget set F
moves the minimiser, to first order, by

    Δθ = (1/n) · (C + λI)⁻¹ · Σ_{i∈F} ∇ℓ_i(θ),      θ' = θ + scale · Δθ,

with C the curvature of the retained loss (the mean over retained samples), λ the damping.
C is (`curvature`):
- 'gauss_newton' (default): the generalised Gauss-Newton matrix G = Σ_positions w·Jᵀ H_out J,
  J the Jacobian of an answer position's logits in the solved parameters, H_out = diag(p) − ppᵀ
  the softmax cross-entropy's Hessian in those logits (p: the model's softmax; w: 1 / the row's
  answer tokens). It is the Hessian without the term that carries the residual's second
  derivatives of the network, positive semi-definite by construction, and equal to the Fisher
  of the model's own predictive distribution for softmax outputs. G·v (`ggn_vp`): linearise the
  logits (J v), multiply by H_out in logit space, transpose the linearisation (Jᵀ u). The linear
  algebra (products, CG, the solve) is methods/influence_solve.py.
- 'hessian': ∇²ℓ, forward-over-reverse (`jax.jvp` of `jax.grad`).
(C + λI)⁻¹ g is solved by conjugate gradients on these products over a fixed seeded sample of
the retained set; C is never formed. Its cost, the time of the forget gradient and the CG solve
(compilation apart), is the method's `time_s` / `unlearn_time_s`, recorded like every method's.

What is approximated, and where:
- The influence step is exact only for a strictly convex loss at its minimum; the original is
  a network at wherever early stopping left it (its gradient is not 0 there). The step is a
  local, first-order correction, and `scale` multiplies it.
- H is the retained loss's Hessian on `retain_samples` random retained samples (seeded by the
  run's seed), not on all of them; the factor is 1/n (n: the train split the original learnt,
  retain + forget) as in Koh & Liang's formula. The exact leave-F-out Newton step on the retained
  objective would be 1/(n - |F|); the difference, a factor 1 − |F|/n (0.8 for a forget set of
  a fifth of the samples), is inside `scale`.
- ℓ_i is the per-sample mean over answer tokens; training takes the mean over a batch's tokens.
  The two are equal when every answer has the same number of tokens (Yes/No answers do, up to
  the tokenizer).
- The Hessian is not positive definite for a network; λ makes it so only when it exceeds the
  most negative eigenvalue. CG stops at a direction of non-positive curvature (recorded as
  'cg_stop': 'negative_curvature', 'cg_negative_curvature': true); measured on the demo, that
  happens after an iteration or two, and the step is then about a scaled forget gradient. G + λI
  is positive definite for any λ > 0, so CG on it only stops by its iteration count, by
  convergence or by the rule below. G drops the Hessian's residual term, which is what makes it
  indefinite; at a minimum where the model fits its data that term is small, elsewhere G is the
  local quadratic model of the loss the step trusts instead. CG runs `cg_iters` iterations
  or until the residual is 1e-6 of |g|; fewer iterations are a smaller, smoother step (CG's
  iterates grow in norm from 0), which is what the retrain-free rule below chooses among. The
  stats record every iterate's relative residual |g − (C + λI)x_k|/|g| ('cg_residuals'), the
  published iterate's ('cg_chosen_residual') and why CG stopped ('cg_stop').
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
  B-curvature is s²·Aᵀ C_W A per kernel pair). It scales: the solve's dimension is r·d_out per
  target kernel, and the model is published as adapters, like E2URec. config.lora.init_from
  does not apply: the step is taken at the original, so B starts at 0.
- 'full': every weight of the original (the general case: the exact influence step of the
  whole model), published as full weights. Its curvature products hold a few copies of the
  model: for tiny models.

The retrain-free stop (config.unlearn.auto='heldout_mia', methods/auto_stop.py's rule) picks
the CG iteration count: the held-out membership gap |AUC - 0.5| (train/heldout.py) of the model
θ + scale·Δθ_k is scored at iterations k = 1, 2, 4, 8, ... and at the last one; the iterate with
the smallest gap is published, and CG stops after unlearn.auto_patience checks without a smaller
one. unlearn.auto_every (a number of training steps) does not apply to CG iterations. The
checks count in time_s, not in unlearn_time_s, as in the methods trained by steps. Training
callbacks (train/callbacks.py) see no steps: there are none.
"""
import time

import numpy as np

from e2urec_jax import rules, seeds
from e2urec_jax.methods.influence_solve import CURVATURES, Derivatives, Space, full_space, influence_update, lora_space
from e2urec_jax.methods.spec import MethodSpec, register

NAME = 'influence'
PARAMS = ('lora', 'full')


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
  from e2urec_jax.data import make_batch  # no JAX in config
  from e2urec_jax.train import mesh as mesh_lib  # no JAX in config
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
  import jax  # no JAX in config

  from e2urec_jax.methods import common, llmrec  # no JAX in config
  from e2urec_jax.train import artifacts, heldout, inference  # no JAX in config
  from e2urec_jax.train.context import peak_memory_bytes  # no JAX in config
  from e2urec_jax.train.paths import ORIGINAL  # no JAX in config
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
        # λ added to the curvature: > 0 (larger: a smaller step the local model predicts better). 0.01
        # (1.7% of G's top eigenvalue, 0.59) on the demo's seed 42 (benchmarks/influence_probe.py) is
        # the smallest damping whose step the local model still predicts: forget-loss rise 0.036
        # predicted, 0.032 actual, CG's residual 3e-4 after 20 iterations; at 0.003 the step is 2.8x
        # longer, the rise 0.090 predicted against 0.057 actual and the retained loss rises 3.4x the
        # quadratic model's prediction (0.001: 7x, test AUC -0.065). Not chosen by distance to retrain.
        'damping': 0.01,
        'retain_samples': 1024,  # Retained samples (seeded) whose mean Hessian is H.
        'cg_iters': 20,  # Conjugate-gradient iterations (at most; the retrain-free stop may pick fewer).
        'batch_size': 32,  # Samples per gradient / Hessian-vector-product batch.
        # Multiplier on the influence update. 1 = the first-order estimate: at damping 0.01 the forget
        # loss rises by 0.9 of what that estimate predicts, so nothing measured asks for another value.
        'scale': 1.0,
    },
    rules={'params': rules.one_of(*PARAMS), 'curvature': rules.one_of(*CURVATURES), 'damping': rules.POSITIVE, 'retain_samples': rules.POSITIVE_INT,
           'cg_iters': rules.POSITIVE_INT, 'batch_size': rules.POSITIVE_INT, 'scale': rules.POSITIVE},
    trainable='lora', run=unlearn_influence, seeded=True, chainable=True, auto_stop=True,
    # Run where config.unlearn.methods names it (not yet in the default list the demo's claims use).
    in_default=False))

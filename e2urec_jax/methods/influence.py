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
from e2urec_jax import rules
from e2urec_jax.methods.spec import MethodSpec, register

NAME = 'influence'
PARAMS = ('lora', 'full')


def unlearn_influence(ctx, name, section, seed, callbacks=()) -> dict:
  """MethodSpec.run: the influence step from the original (methods/influence_step.py)."""
  from e2urec_jax.methods import influence_step  # no JAX in config
  return influence_step.unlearn(ctx, name, section, seed, callbacks, method=NAME)


SPEC = register(MethodSpec(
    name=NAME,
    summary='influence-function step (LLMEraser): (1/n)(H+λI)⁻¹Σ_F∇ℓ by CG on HVPs, no training',
    defaults={
        'params': 'lora',  # 'lora': solve for fresh adapters' B (A fixed) on the original; 'full': every weight.
        'damping': 0.01,  # λ added to the retained loss's Hessian: > 0 (larger: smaller, safer step).
        'retain_samples': 1024,  # Retained samples (seeded) whose mean Hessian is H.
        'cg_iters': 20,  # Conjugate-gradient iterations (at most; the retrain-free stop may pick fewer).
        'batch_size': 32,  # Samples per gradient / Hessian-vector-product batch.
        'scale': 1.0,  # Multiplier on the influence update (1 = the first-order estimate).
    },
    rules={'params': rules.one_of(*PARAMS), 'damping': rules.POSITIVE, 'retain_samples': rules.POSITIVE_INT,
           'cg_iters': rules.POSITIVE_INT, 'batch_size': rules.POSITIVE_INT, 'scale': rules.POSITIVE},
    trainable='lora', run=unlearn_influence, seeded=True, chainable=True, auto_stop=True,
    # Run where config.unlearn.methods names it (not yet in the default list the demo's claims use).
    in_default=False))

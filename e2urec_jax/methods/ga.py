"""GA (LLM unlearning): pure gradient ascent on the forget set, no retain term."""
from e2urec_jax.methods.full_param import run_full_param


def unlearn_ga(ctx, name='ga', seed=None):
  cfg = ctx.config.unlearn.ga
  return run_full_param(ctx, name, cfg, kind='ascent', extra_hp={'retain_coef': 0.0, 'ascent_weight': 1.0},
                        seed=seed)

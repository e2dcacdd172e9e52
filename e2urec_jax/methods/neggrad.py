"""NegGrad as in the E2URec code: retain CE - weight * forget CE on all parameters."""
from e2urec_jax.methods.full_param import run_full_param


def unlearn_neggrad(ctx, name='neggrad', seed=None):
  cfg = ctx.config.unlearn.neggrad
  return run_full_param(ctx, name, cfg, kind='ascent', extra_hp={'retain_coef': 1.0, 'ascent_weight': cfg.weight},
                        seed=seed)

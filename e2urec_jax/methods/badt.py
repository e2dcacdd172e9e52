"""Bad-T as in the E2URec code: retain CE + weight * CE on the forget set with the answers flipped."""
from e2urec_jax.methods.full_param import run_full_param


def unlearn_badt(ctx, name='badt', seed=None):
  cfg = ctx.config.unlearn.badt
  # ascent_weight = -weight turns the shared "retain - w * forget" step into descent on flipped answers.
  return run_full_param(ctx, name, cfg, kind='ascent', flip_forget=True,
                        extra_hp={'retain_coef': 1.0, 'ascent_weight': -cfg.weight}, seed=seed)

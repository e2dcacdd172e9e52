"""NPO (Zhang et al. 2024): negative preference optimisation against the frozen original, plus retain CE."""
from e2urec_jax.methods.full_param import run_full_param


def unlearn_npo(ctx, name='npo', seed=None):
  cfg = ctx.config.unlearn.npo
  return run_full_param(ctx, name, cfg, kind='npo',
                        extra_hp={'beta': cfg.beta, 'retain_weight': cfg.retain_weight}, seed=seed)

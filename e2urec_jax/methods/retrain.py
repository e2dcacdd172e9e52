"""Retrain: the same recipe on the retain split from the same start, the gold standard of unlearning.

A second retrain with another seed measures the noise floor: how far two exact unlearnings
land from each other, so a method's distance to retrain can be read against it.
"""
from e2urec_jax.methods import common
from e2urec_jax.train.context import get_context

NAME = 'retrain'
NOISE_NAME = 'retrain_seed2'


def ensure_retrain(ctx, *, noise_floor: bool = False) -> dict:
  retain, _ = common.split_indices(ctx.data)
  name, seed = (NOISE_NAME, ctx.config.seed + 1) if noise_floor else (NAME, ctx.config.seed)
  return common.train_ce(ctx, name, indices=retain, mode=ctx.config.train.mode, seed=seed)


def retrain(config, workdir):
  stats = ensure_retrain(get_context(config, workdir))
  print(f'retrain: {stats["steps"]} steps in {stats["time_s"]:.1f}s (valid loss {stats["best_valid"]:.4f})')

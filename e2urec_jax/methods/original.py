"""The original LLMRec: instruction-tuned on the whole train split (the model to unlearn from)."""
import numpy as np

from e2urec_jax.methods import common
from e2urec_jax.train.context import get_context

NAME = 'original'


def ensure_original(ctx) -> dict:
  train = ctx.data.splits['train']
  return common.train_ce(ctx, NAME, indices=np.arange(len(train.label)), mode=ctx.config.train.mode,
                         seed=ctx.config.seed)


def train_original(config, workdir):
  stats = ensure_original(get_context(config, workdir))
  print(f'original: {stats["steps"]} steps in {stats["time_s"]:.1f}s (valid loss {stats["best_valid"]:.4f})')

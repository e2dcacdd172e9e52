"""SISA and RecEraser: one model per shard; unlearning retrains the shards that hold forget data.

The cost of unlearning is the retraining of the affected shards (summed); shards without
forget data keep the model they had, trained before the request (not counted). The method's
model is an ensemble file naming the shard models (train/inference.py reads it).
"""
import numpy as np

from e2urec_jax.methods import llmrec
from e2urec_jax.train import artifacts
from e2urec_jax.train.context import peak_memory_bytes

def train_shards(ctx, name: str, shard_of: np.ndarray, seed: int, callbacks=()) -> tuple[dict, list[str]]:
  """Trains shard k (the model '<name>/shard<k>') on its samples minus the forget set where it holds forget data."""
  is_forget = ctx.data.splits['train'].is_forget
  num_shards = int(shard_of.max()) + 1
  time_s = compile_s = loop_s = 0.0
  size = 0
  shard_names, affected = [], []
  for k in range(num_shards):
    in_shard = shard_of == k
    hit = bool((in_shard & is_forget).any())
    rows = np.flatnonzero(in_shard & ~is_forget) if hit else np.flatnonzero(in_shard)
    shard = f'{name}/shard{k}'
    stats = llmrec.train_ce(ctx, shard, indices=rows, seed=seed, role='shards', callbacks=callbacks)
    if hit:
      time_s += stats['time_s']
      compile_s += stats['compile_s']
      loop = stats.get('unlearn_time_s')  # (None in done.json written before the field existed)
      loop_s = None if loop is None or loop_s is None else loop_s + loop
      affected.append(k)
    size += artifacts.dir_bytes(ctx.model_dir(shard))
    shard_names.append(shard)
  totals = {'time_s': time_s, 'compile_s': compile_s, 'unlearn_time_s': loop_s, 'checkpoint_bytes': size,
            'affected_shards': affected, 'num_shards': num_shards}
  return totals, shard_names


def finish_sharded(ctx, name: str, totals: dict, extra_time_s: float = 0.0) -> dict:
  """Writes the shard method's stats: the retraining of its affected shards is its cost
  (time_s: whole; unlearn_time_s: their training loops), plus `extra_time_s` in both (RecEraser's
  aggregation: the shards' features and the attention's training)."""
  num_base = ctx.bundle.num_base_params
  loop_s = totals.get('unlearn_time_s')
  stats = {
      'time_s': totals['time_s'] + extra_time_s, 'compile_s': totals['compile_s'],
      'unlearn_time_s': None if loop_s is None else loop_s + extra_time_s, 'steps': None,
      'trainable_params': num_base * len(totals['affected_shards']),
      'trainable_fraction': float(len(totals['affected_shards'])),
      'checkpoint_bytes': totals['checkpoint_bytes'],
      'peak_memory_bytes': peak_memory_bytes(),
      'affected_shards': totals['affected_shards'], 'num_shards': totals['num_shards']}
  artifacts.write_done(ctx.phase_dir(name), stats)
  return stats


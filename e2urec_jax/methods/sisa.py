"""SISA (Bourtoule et al.): random shards of the train samples, logits averaged over shard models."""
from e2urec_jax.methods import common, sharded


def unlearn_sisa(ctx, name='sisa', seed=None):
  stats = common.done(ctx, name)
  if stats is not None:
    return stats
  totals, shard_names = sharded.train_shards(ctx, name, ctx.data.splits['train'].sisa_shard)
  sharded.write_ensemble(ctx, name, shard_names, ctx.config.unlearn.sisa.aggregate)
  return sharded.finish_sharded(ctx, name, totals)

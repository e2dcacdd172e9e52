"""SISA (Bourtoule et al.): random shards of the train samples, logits averaged over shard models."""
from e2urec_jax import rules
from e2urec_jax.methods.spec import MethodSpec, register


def unlearn_sisa(ctx, name, section, seed, callbacks=()) -> dict:
  from e2urec_jax.methods import sharded  # no JAX in config
  from e2urec_jax.train import inference  # no JAX in config
  totals, shard_names = sharded.train_shards(ctx, name, ctx.data.splits['train'].sisa_shard, seed, callbacks)
  inference.write_ensemble(ctx, name, shard_names, section.aggregate)
  return sharded.finish_sharded(ctx, name, totals)


SPEC = register(MethodSpec(
    name='sisa',
    summary='random shards of the train samples; shard models use the train recipe (config.train)',
    defaults={
        'aggregate': 'mean',  # Average of the shards' logits, as the original evaluates it.
    },
    rules={'aggregate': rules.one_of('mean')}, trainable='shards', run=unlearn_sisa, seeded=False,
    chainable=False))

"""RecEraser (Chen et al. 2022): balanced user-disjoint shards; shard outputs combined by attention
learned on retained data (mean as an option); unlearning retrains the shards of forgotten users."""
import time

import numpy as np

from e2urec_jax import rules, seeds
from e2urec_jax.methods import common
from e2urec_jax.methods.spec import MethodSpec, register

HIDDEN = 8
MAX_ATTENTION_SAMPLES = 2000
ATTENTION_PHASE = 'attention'  # its own seed phase (seeds.derive): the aggregation weights and their samples


def _shard_features(ctx, shard_names, rows) -> np.ndarray:
  """[N, K, 2]: each shard model's Yes/No logits at the first answer position."""
  from e2urec_jax.train import inference  # no JAX in config
  yes_no = [ctx.data.yes_id, ctx.data.no_id]
  members = [inference.single_from_dir(ctx, ctx.model_dir(s)) for s in shard_names]
  feats = []
  for batch, real in inference.iterate_eval(ctx, 'train', rows):
    per_shard = [m.logits(batch)[:real, 0][:, yes_no] for m in members]
    feats.append(np.stack(per_shard, axis=1))
  return np.concatenate(feats)


def train_attention(features: np.ndarray, labels: np.ndarray, steps: int, seed: int) -> dict:
  """Fits W, b, v so that sum_k a_k * logits_k predicts the label (binary CE over Yes vs No)."""
  import jax  # no JAX in config
  import jax.numpy as jnp  # no JAX in config
  import optax  # no JAX in config
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {'W': 0.1 * jax.random.normal(k1, (2, HIDDEN)), 'b': jnp.zeros(HIDDEN),
            'v': 0.1 * jax.random.normal(k2, (HIDDEN,))}
  feats, y = jnp.asarray(features), jnp.asarray(labels, jnp.float32)

  def loss_fn(p):
    scores = jnp.tanh(feats @ p['W'] + p['b']) @ p['v']  # [N, K]
    a = jax.nn.softmax(scores, axis=1)
    agg = jnp.einsum('nk,nkc->nc', a, feats)  # [N, 2]
    margin = agg[:, 0] - agg[:, 1]
    return optax.sigmoid_binary_cross_entropy(margin, y).mean()

  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    g = jax.grad(loss_fn)(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  for _ in range(steps):
    params, state = step(params, state)
  return {k: np.asarray(v).tolist() for k, v in params.items()}


def unlearn_receraser(ctx, name, section, seed, callbacks=()) -> dict:
  from e2urec_jax.methods import sharded  # no JAX in config
  from e2urec_jax.train import inference  # no JAX in config
  totals, shard_names = sharded.train_shards(ctx, name, ctx.data.splits['train'].receraser_shard, seed, callbacks)
  start = time.perf_counter()
  aggregator = None
  if section.aggregate == 'attention':
    attention_seed = seeds.derive(seed, 'receraser', ATTENTION_PHASE)
    retain, _ = common.split_indices(ctx.data)
    rows = np.sort(np.random.default_rng(attention_seed).permutation(retain)[:MAX_ATTENTION_SAMPLES])
    features = _shard_features(ctx, shard_names, rows)
    labels = ctx.data.splits['train'].label[rows]
    aggregator = train_attention(features, labels, section.attention_steps, attention_seed)
  inference.write_ensemble(ctx, name, shard_names, section.aggregate, aggregator)
  return sharded.finish_sharded(ctx, name, totals, extra_time_s=time.perf_counter() - start)


SPEC = register(MethodSpec(
    name='receraser',
    summary='user-disjoint shards (data.protocol: balanced, or the paper\'s chunks); shard models use config.train',
    defaults={
        'aggregate': 'attention',  # 'attention' (learned on retained data) or 'mean'.
        'attention_steps': 200,  # Steps training the aggregation weights.
    },
    rules={'aggregate': rules.one_of('attention', 'mean'), 'attention_steps': rules.POSITIVE_INT},
    trainable='shards', run=unlearn_receraser, seeded=False, chainable=False))

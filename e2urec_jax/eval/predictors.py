"""Any trained or unlearned model in a workdir, as one thing that maps a batch to answer logits.

Full models, adapters on the original, and shard ensembles (SISA mean, RecEraser attention)
all answer `logits(batch) -> [batch, answer, vocab]` (numpy), so scoring treats them alike.
"""
import os

import numpy as np

from e2urec_jax import runtime
from e2urec_jax.errors import UserError
from e2urec_jax.train import artifacts


def attention_weights(aggregator: dict, features: np.ndarray) -> np.ndarray:
  """RecEraser's attention over shards: features [N, K, 2] (shard Yes/No logits) -> weights [N, K]."""
  hidden = np.tanh(features @ np.asarray(aggregator['W']) + np.asarray(aggregator['b']))  # [N, K, H]
  scores = hidden @ np.asarray(aggregator['v'])  # [N, K]
  scores = scores - scores.max(axis=1, keepdims=True)
  weights = np.exp(scores)
  return weights / weights.sum(axis=1, keepdims=True)


class SingleModel:

  def __init__(self, ctx, params, adapters):
    from e2urec_jax.methods.common import eval_logits_fn
    self._fn = eval_logits_fn(ctx)
    self.params, self.adapters = ctx.put_frozen(params), ctx.put(adapters)  # FSDP-sharded when model_axis > 1

  def logits(self, batch) -> np.ndarray:
    return np.asarray(self._fn(self.params, self.adapters, batch), dtype=np.float32)


class Ensemble:

  def __init__(self, members, aggregate: str, aggregator, yes_id: int, no_id: int):
    self.members, self.aggregate, self.aggregator = members, aggregate, aggregator
    self.yes_no = [yes_id, no_id]

  def logits(self, batch) -> np.ndarray:
    each = np.stack([m.logits(batch) for m in self.members], axis=1)  # [batch, shards, answer, vocab]
    if self.aggregate == 'mean':
      return each.mean(axis=1)
    weights = attention_weights(self.aggregator, each[:, :, 0, self.yes_no])  # [batch, shards]
    return np.einsum('bk,bkav->bav', weights, each)


def single_from_dir(ctx, path: str) -> SingleModel:
  if artifacts.is_adapter_dir(path):
    adapters, meta = artifacts.load_adapters(path, expect=ctx.lora_meta)  # the run's scale must fit
    _, base = artifacts.load_full(meta['base_dir'])
    return SingleModel(ctx, ctx.base_dtype(base), adapters)
  if not os.path.exists(os.path.join(path, 'config.json')):
    raise UserError(f'{path} is not a model folder (no config.json or adapter_config.json)')
  _, params = artifacts.load_full(path)
  return SingleModel(ctx, params, ctx.zero_adapters(params))


def load_predictor(ctx, name: str):
  path = ctx.model_dir(name)
  if not os.path.isdir(path):
    known = sorted(os.listdir(os.path.dirname(path))) if os.path.isdir(os.path.dirname(path)) else []
    raise UserError(f'no model {name!r} in {ctx.workdir}/models (have: {", ".join(known) or "none"}); '
                    'train it first or pass one of those to --model')
  ensemble_file = os.path.join(path, 'ensemble.json')
  if os.path.exists(ensemble_file):
    spec = runtime.read_json(ensemble_file)
    members = [single_from_dir(ctx, ctx.model_dir(s)) for s in spec['shards']]
    return Ensemble(members, spec['aggregate'], spec.get('aggregator'), ctx.data.yes_id, ctx.data.no_id)
  return single_from_dir(ctx, path)

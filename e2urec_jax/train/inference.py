"""Inference, shared by training (validation, RecEraser's aggregation) and evaluation: jitted
logits, evaluation batches in order, and any saved model as one `logits(batch)` predictor.

Full models, adapters on the original and shard ensembles (SISA mean, RecEraser attention)
all answer `logits(batch) -> [batch, answer, vocab]` (numpy), so scoring treats them alike.
"""
import os

import numpy as np

from e2urec_jax import losses, runtime, storage
from e2urec_jax.data import make_batch
from e2urec_jax.errors import UserError
from e2urec_jax.models import answer_logits
from e2urec_jax.train import artifacts, mesh as mesh_lib, sampling, steps

ENSEMBLE_FILE = 'ensemble.json'  # beside a shard method's model: its shards and how they combine


# ------------------------------------------------------------------ jitted forwards
def eval_logits_fn(ctx):
  """Jitted (params, adapters, batch) -> [batch, answer, vocab] logits; one compile for every model.

  params keep their placement (FSDP-sharded or replicated); the logits come back replicated,
  so every process of a multi-host run can read them (np.asarray) on its own."""
  def build():
    fn = lambda params, adapters, batch: answer_logits(ctx.model, params, batch, adapters=adapters)
    return steps.PlacedJit(fn, ctx.mesh, (steps.FROZEN, steps.REPLICATED, steps.BATCH),
                           out_shardings=mesh_lib.replicated(ctx.mesh))
  return ctx.compiled('eval_logits', build)


def eval_ce_fn(ctx):
  """Jitted (params, adapters, batch) -> (sum of token CE, token count): the validation loss."""
  def build():
    rep = mesh_lib.replicated(ctx.mesh)

    def fn(params, adapters, batch):
      logits = answer_logits(ctx.model, params, batch, adapters=adapters)
      mask = batch['answer_mask']
      count = mask.sum()
      return losses.answer_cross_entropy(logits, batch['answer_labels'], mask) * count, count
    return steps.PlacedJit(fn, ctx.mesh, (steps.FROZEN, steps.REPLICATED, steps.BATCH), out_shardings=(rep, rep))
  return ctx.compiled('eval_ce', build)


def iterate_eval(ctx, split: str, indices: np.ndarray, batch_size: int | None = None, with_host=False,
                 full_batches=False):
  """(device batch, number of real rows) over `indices` in order, padded for the mesh.

  Every process builds the same host batch and feeds its own rows of it (`put_batch`).
  with_host=True yields (device batch, host batch, real rows). full_batches=True pads the last
  batch to the full size: one shape (one compile) however many rows there are."""
  batch_size = batch_size or ctx.config.eval.batch_size
  batch_size = max(ctx.num_devices, batch_size - batch_size % ctx.num_devices)
  multiple = batch_size if full_batches else ctx.num_devices
  for rows, pad in sampling.eval_chunks(len(indices), batch_size, multiple):
    host = make_batch(ctx.data, split, indices[rows], batch_size=len(rows) + pad)  # padding rows masked
    device = mesh_lib.put_batch(host, ctx.mesh)
    yield (device, host, len(rows)) if with_host else (device, len(rows))


def validation_loss(ctx, params, adapters, indices=None) -> float:
  """Mean answer-token CE over the valid split (or its `indices`)."""
  fn = eval_ce_fn(ctx)
  indices = np.arange(len(ctx.data.splits['valid'].label)) if indices is None else indices
  total, count = 0.0, 0.0
  for batch, _ in iterate_eval(ctx, 'valid', indices):
    s, c = fn(params, adapters, batch)
    total, count = total + float(s), count + float(c)
  return total / max(count, 1.0)


# ------------------------------------------------------------------ predictors
def attention_weights(aggregator: dict, features: np.ndarray) -> np.ndarray:
  """RecEraser's attention over shards: features [N, K, 2] (shard Yes/No logits) -> weights [N, K]."""
  hidden = np.tanh(features @ np.asarray(aggregator['W']) + np.asarray(aggregator['b']))  # [N, K, H]
  scores = hidden @ np.asarray(aggregator['v'])  # [N, K]
  scores = scores - scores.max(axis=1, keepdims=True)
  weights = np.exp(scores)
  return weights / weights.sum(axis=1, keepdims=True)


class SingleModel:
  """One set of weights (a full model, or a base with adapters)."""

  def __init__(self, ctx, params, adapters):
    self._fn = eval_logits_fn(ctx)
    self.params, self.adapters = ctx.put_frozen(params), ctx.put(adapters)  # FSDP-sharded when model_axis > 1

  def logits(self, batch) -> np.ndarray:
    return np.asarray(self._fn(self.params, self.adapters, batch), dtype=np.float32)


class Ensemble:
  """Shard models combined: the mean of their logits, or RecEraser's attention over them."""

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
  """A full-weights folder, or an adapter folder on the base it names."""
  if artifacts.is_adapter_dir(path):
    adapters, meta = artifacts.load_adapters(path, expect=ctx.bundle.lora_meta)  # the run's scale must fit
    _, base = artifacts.load_full(meta['base_dir'])
    return SingleModel(ctx, ctx.base_dtype(base), adapters)
  if not storage.exists(os.path.join(path, 'config.json')):
    raise UserError(f'{path} is not a model folder (no config.json or adapter_config.json)')
  _, params = artifacts.load_full(path)
  return SingleModel(ctx, params, ctx.zero_adapters(params))


def write_ensemble(ctx, name: str, shard_names: list[str], aggregate: str, aggregator=None) -> None:
  """Publishes a shard method's model: the names of its shard models and how to combine them."""
  runtime.write_json(os.path.join(ctx.model_dir(name), ENSEMBLE_FILE),
                     {'shards': shard_names, 'aggregate': aggregate, 'aggregator': aggregator})


def is_ensemble(path: str) -> bool:
  return storage.exists(os.path.join(path, ENSEMBLE_FILE))


def load_predictor(ctx, name: str):
  """Model `name` of the run (a single model or a shard ensemble)."""
  path = ctx.model_dir(name)
  if not storage.isdir(path):
    parent = os.path.dirname(path)
    known = sorted(storage.listdir(parent)) if storage.isdir(parent) else []
    raise UserError(f'no model {name!r} in {parent} (have: {", ".join(known) or "none"}); '
                    'train it first or pass one of those to --model')
  if is_ensemble(path):
    spec = runtime.read_json(os.path.join(path, ENSEMBLE_FILE))
    members = [single_from_dir(ctx, ctx.model_dir(s)) for s in spec['shards']]
    return Ensemble(members, spec['aggregate'], spec.get('aggregator'), ctx.data.yes_id, ctx.data.no_id)
  return single_from_dir(ctx, path)

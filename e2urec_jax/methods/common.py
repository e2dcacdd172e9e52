"""What every method shares: batches, student forwards, the CE recipe, evaluation forwards, bookkeeping.

A *trainable kind* is 'full' (all weights are trained; `frozen` holds what else the loss
needs) or 'lora' (adapters are trained on `frozen['base']`).
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from e2urec_jax import losses
from e2urec_jax.train import artifacts, sampling, steps
from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train.context import peak_memory_bytes
from e2urec_jax.train.loop import run_phase


# ------------------------------------------------------------------ batches
def paired_batch(data, retain_idx, forget_idx, *, flip_forget=False) -> dict:
  """One retain and one forget batch padded to the same length (one compiled shape per bucket)."""
  from e2urec_jax.data import make_batch
  r = make_batch(data, 'train', retain_idx)
  f = make_batch(data, 'train', forget_idx, flip=flip_forget)
  length = max(r['input_ids'].shape[1], f['input_ids'].shape[1])
  if r['input_ids'].shape[1] != length:
    r = make_batch(data, 'train', retain_idx, length=length)
  if f['input_ids'].shape[1] != length:
    f = make_batch(data, 'train', forget_idx, flip=flip_forget, length=length)
  return {'retain': r, 'forget': f}


def concat_batches(a: dict, b: dict) -> dict:
  return {k: jnp.concatenate([a[k], b[k]], axis=0) for k in a}


def split_indices(data):
  train = data.splits['train']
  forget = np.flatnonzero(train.is_forget)
  retain = np.flatnonzero(~train.is_forget)
  return retain, forget


# ------------------------------------------------------------------ forwards
def student_logits(model, kind, trainable, frozen, batch, rng):
  """[batch, answer, vocab] logits of the model being trained."""
  from e2urec_jax.models import answer_logits
  if kind == 'full':
    return answer_logits(model, trainable, batch, dropout_rng=rng)
  return answer_logits(model, frozen['base'], batch, adapters=trainable, dropout_rng=rng)


def ce_loss_fn(model, kind):
  def loss_fn(trainable, frozen, batch, rng, hp):
    logits = student_logits(model, kind, trainable, frozen, batch, rng)
    return losses.answer_cross_entropy(logits, batch['answer_labels'], batch['answer_mask']), {}
  return loss_fn


def eval_logits_fn(ctx):
  """Jitted (params, adapters, batch) -> [batch, answer, vocab] logits; one compile for every model.

  params keep their placement (FSDP-sharded or replicated); the logits come back replicated,
  so every process of a multi-host run can read them (np.asarray) on its own."""
  def build():
    from e2urec_jax.models import answer_logits
    fn = lambda params, adapters, batch: answer_logits(ctx.model, params, batch, adapters=adapters)
    return steps.PlacedJit(fn, ctx.mesh, (steps.FROZEN, steps.REPLICATED, steps.BATCH),
                           out_shardings=mesh_lib.replicated(ctx.mesh))
  return ctx.compiled('eval_logits', build)


def eval_ce_fn(ctx):
  """Jitted (params, adapters, batch) -> (sum of token CE, token count): the validation loss."""
  def build():
    from e2urec_jax.models import answer_logits
    rep = mesh_lib.replicated(ctx.mesh)

    def fn(params, adapters, batch):
      logits = answer_logits(ctx.model, params, batch, adapters=adapters)
      mask = batch['answer_mask']
      count = mask.sum()
      return losses.answer_cross_entropy(logits, batch['answer_labels'], mask) * count, count
    return steps.PlacedJit(fn, ctx.mesh, (steps.FROZEN, steps.REPLICATED, steps.BATCH), out_shardings=(rep, rep))
  return ctx.compiled('eval_ce', build)


def iterate_eval(ctx, split: str, indices: np.ndarray, batch_size: int | None = None, with_host=False):
  """(device batch, number of real rows) over `indices` in order, padded for the mesh.

  Every process builds the same host batch and feeds its own rows of it (`put_batch`).
  with_host=True yields (device batch, host batch, real rows)."""
  from e2urec_jax.data import make_batch
  batch_size = batch_size or ctx.config.eval.batch_size
  batch_size = max(ctx.num_devices, batch_size - batch_size % ctx.num_devices)
  for rows, pad in sampling.eval_chunks(len(indices), batch_size, ctx.num_devices):
    host = make_batch(ctx.data, split, indices[rows], batch_size=len(rows) + pad)  # padding rows masked
    device = mesh_lib.put_batch(host, ctx.mesh)
    yield (device, host, len(rows)) if with_host else (device, len(rows))


def validation_loss(ctx, params, adapters, indices=None) -> float:
  fn = eval_ce_fn(ctx)
  indices = np.arange(len(ctx.data.splits['valid'].label)) if indices is None else indices
  total, count = 0.0, 0.0
  for batch, _ in iterate_eval(ctx, 'valid', indices):
    s, c = fn(params, adapters, batch)
    total, count = total + float(s), count + float(c)
  return total / max(count, 1.0)


# ------------------------------------------------------------------ phases
def hparams(lr: float, weight_decay: float = 0.0, warmup: int = 0, **extra):
  def for_step(step: int) -> dict:
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return {'lr': lr * scale, 'weight_decay': weight_decay, **extra}
  return for_step


def finish(ctx, name: str, result, *, trainable_params: int, checkpoint_bytes: int, extra=None) -> dict:
  stats = {
      'time_s': result.time_s, 'compile_s': result.compile_s, 'steps': result.steps,
      'examples_per_s': result.examples_per_s, 'trainable_params': int(trainable_params),
      'trainable_fraction': trainable_params / max(ctx.num_base_params, 1),
      'checkpoint_bytes': int(checkpoint_bytes), 'peak_memory_bytes': peak_memory_bytes(),
      'best_valid': result.best_valid, 'stopped_early': result.stopped_early, 'final_loss': result.final_loss,
      **(extra or {})}
  artifacts.write_done(ctx.phase_dir(name), stats)
  return stats


def done(ctx, name: str):
  """The stats of a finished phase whose artifact is still in place, else None."""
  stats = artifacts.read_done(ctx.phase_dir(name))
  if stats is not None and os.path.exists(ctx.model_dir(name)):
    return stats
  return None


def train_ce(ctx, name: str, *, indices: np.ndarray, mode: str, seed: int, start_params=None,
             save: bool = True) -> dict:
  """The LLMRec recipe (config.train): CE on the answer tokens, AdamW, early stopping on valid loss.

  mode 'full' trains every weight; 'lora' trains adapters and merges them into the saved model.
  Used by the original model, retrain, the noise-floor retrain and the SISA/RecEraser shards.
  """
  from e2urec_jax.data import make_batch
  from e2urec_jax.models import lora
  stats = done(ctx, name)
  if stats is not None:
    return stats
  cfg = ctx.config.train
  params = ctx.pretrained_params if start_params is None else start_params
  per_epoch = sampling.steps_per_epoch(len(indices), cfg.batch_size)
  num_steps = per_epoch * cfg.epochs
  if cfg.max_steps:
    num_steps = min(num_steps, cfg.max_steps)
  eval_every = cfg.eval_every or min(per_epoch, num_steps)
  if mode == 'full':
    trainable, frozen = params, {}
    validate = lambda t: validation_loss(ctx, t, zeros)
  else:
    frozen = {'base': ctx.put(ctx.base_dtype(params))}
    trainable = ctx.new_adapters(params, seed)
    validate = lambda t: validation_loss(ctx, frozen['base'], t)
  zeros = ctx.put(ctx.zero_adapters(params))
  step_fn = ctx.compiled(('ce', mode), lambda: steps.make_train_step(ce_loss_fn(ctx.model, mode), ctx.mesh))
  batch_size = cfg.batch_size

  def batch_for_step(step):
    return make_batch(ctx.data, 'train', sampling.batch_indices(indices, batch_size, seed, step))

  result = run_phase(
      name=name, phase_dir=ctx.phase_dir(name), config=ctx.config, step_fn=step_fn,
      trainable=ctx.put(trainable), opt_state=ctx.put(steps.init_opt_state(trainable)), frozen=frozen,
      batch_for_step=batch_for_step,
      hparams_for_step=hparams(cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps),
      num_steps=num_steps, examples_per_step=batch_size, mesh=ctx.mesh,
      base_sha256=ctx.base_sha256(ctx.pretrained_dir), validate=validate, eval_every=eval_every,
      patience=cfg.patience, seed=seed)
  final = result.trainable
  if mode == 'lora':
    final = lora.merge(params, jax.device_get(final), ctx.config.lora.alpha / ctx.config.lora.r)
    trainable_params = lora.count_params(result.trainable)
  else:
    trainable_params = ctx.num_base_params
  size = artifacts.save_full(ctx.model, jax.device_get(final), ctx.model_dir(name)) if save else 0
  return finish(ctx, name, result, trainable_params=trainable_params, checkpoint_bytes=size)


class Timer:
  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start

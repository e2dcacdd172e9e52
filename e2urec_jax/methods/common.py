"""What the methods share: the retain/forget split, paired batches, the student forward, the CE
loss, hyperparameter schedules, the start of a phase.

A *trainable kind* is 'full' (all weights are trained; `frozen` holds what else the loss
needs) or 'lora' (adapters are trained on `frozen['base']`).

Method modules import this at start-up (the CLI reads their specs before JAX is loaded), so
what needs JAX is imported where it is used.
"""
import numpy as np

from e2urec_jax.data import make_batch
from e2urec_jax.train import objectives, sampling


# ------------------------------------------------------------------ batches
def split_indices(data):
  """(retain rows, forget rows) of the train split."""
  train = data.splits['train']
  forget = np.flatnonzero(train.is_forget)
  retain = np.flatnonzero(~train.is_forget)
  return retain, forget


def paired_batch(data, retain_idx, forget_idx, *, flip_forget=False) -> dict:
  """One retain and one forget batch padded to the same length (one compiled shape per bucket)."""
  r = make_batch(data, 'train', retain_idx)
  f = make_batch(data, 'train', forget_idx, flip=flip_forget)
  length = max(r['input_ids'].shape[1], f['input_ids'].shape[1])
  if r['input_ids'].shape[1] != length:
    r = make_batch(data, 'train', retain_idx, length=length)
  if f['input_ids'].shape[1] != length:
    f = make_batch(data, 'train', forget_idx, flip=flip_forget, length=length)
  return {'retain': r, 'forget': f}


def paired_batches(ctx, batch_size: int, seed_of, *, flip_forget: bool = False, forget_rows: bool = False):
  """batch_for_step of a two-set method: `batch_size` retain and `batch_size` forget samples a step,
  each set in its own seeded order (seed_of('retain_batches'), seed_of('forget_batches')).
  forget_rows=True adds 'forget_rows': each forget sample's position in the forget set
  (split_indices' order), where per-row data computed for the set is read (E2URec's teacher cache)."""
  retain, forget = split_indices(ctx.data)
  retain_seed, forget_seed = seed_of('retain_batches'), seed_of('forget_batches')

  def batch_for_step(step):
    forget_idx = sampling.batch_indices(forget, batch_size, forget_seed, step)
    batch = paired_batch(ctx.data, sampling.batch_indices(retain, batch_size, retain_seed, step), forget_idx,
                         flip_forget=flip_forget)
    if forget_rows:
      batch['forget_rows'] = np.searchsorted(forget, forget_idx).astype(np.int32)
    return batch
  return batch_for_step


def concat_batches(a: dict, b: dict) -> dict:
  import jax.numpy as jnp  # no JAX in config
  return {k: jnp.concatenate([a[k], b[k]], axis=0) for k in a}


# ------------------------------------------------------------------ losses
# The model being trained and its CE: train/objectives.py (the relearning check compiles the same step).
student_logits, ce_loss_fn = objectives.student_logits, objectives.ce_loss_fn


def hparams(lr: float, weight_decay: float = 0.0, warmup: int = 0, **extra):
  """hparams_for_step: AdamW's rate (linear warm-up over `warmup` steps) and decay, and `extra`."""
  def for_step(step: int) -> dict:
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return {'lr': lr * scale, 'weight_decay': weight_decay, **extra}
  return for_step


def trainable_start(ctx, kind: str, params, seed: int, role: str | None = None):
  """(trainable, frozen) of a phase that starts from `params`: the weights themselves ('full'),
  or adapters on the frozen base ('lora'): fresh, or config.lora.init_from's for a `role` in
  config.lora.init_phases (RunContext.new_adapters)."""
  if kind == 'full':
    return params, {}
  return ctx.new_adapters(params, seed, role), {'base': ctx.put(ctx.base_dtype(params))}


def init_record(ctx, kind: str, role: str) -> dict:
  """done.json's record of where a phase's adapters started: {'init_from': folder} or {}."""
  source = ctx.init_from(role) if kind == 'lora' else ''
  return {'init_from': source} if source else {}

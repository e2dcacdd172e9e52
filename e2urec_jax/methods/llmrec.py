"""The LLMRec recipe (config.train): the original model, the retrained reference (and its twin for
the noise floor) and the shard models of SISA and RecEraser, all trained the same way from the
common pretrained start: CE on the answer tokens, AdamW, early stopping on the valid loss.
"""
import numpy as np

from e2urec_jax import seeds
from e2urec_jax.data import make_batch
from e2urec_jax.methods.common import ce_loss_fn, hparams, init_record, split_indices, trainable_start
from e2urec_jax.train import sampling
from e2urec_jax.train.paths import ORIGINAL

RETRAIN = 'retrain'
NOISE_FLOOR = 'retrain_seed2'  # a second retrain (other seeds): how far two exact unlearnings differ


def train_ce(ctx, name: str, *, indices: np.ndarray, seed: int, role: str, callbacks=()) -> dict:
  """The LLMRec recipe (config.train): CE on the answer tokens, AdamW, early stopping on valid loss.

  train.mode 'full' trains every weight; 'lora' trains adapters and merges them into the saved
  model. Used by the original model, retrain, the noise-floor retrain and the shard models
  (`name` is also the seeds' method name); every one starts from the common pretrained model.
  `role` ('original', 'retrain' or 'shards') names it in config.lora.init_phases.
  """
  from e2urec_jax.train import fingerprint, inference, runner  # no JAX in config
  stats = runner.done(ctx, name, fingerprint.of_run(ctx.config, ctx.data.digest, fingerprint.RECIPE, seed=seed))
  if stats is not None:
    return stats
  cfg = ctx.config.train
  kind = cfg.mode
  params = ctx.bundle.pretrained_params
  per_epoch = sampling.steps_per_epoch(len(indices), cfg.batch_size)
  num_steps = per_epoch * cfg.epochs
  if cfg.max_steps:
    num_steps = min(num_steps, cfg.max_steps)
  seed_of = lambda phase: seeds.derive(seed, name, phase)  # noqa: E731
  trainable, frozen = trainable_start(ctx, kind, params, seed_of('init'), role)
  if kind == 'full':
    zeros = ctx.put(ctx.zero_adapters(params))
    validate = lambda t: inference.validation_loss(ctx, t, zeros)  # noqa: E731
  else:
    validate = lambda t: inference.validation_loss(ctx, frozen['base'], t)  # noqa: E731
  batch_seed = seed_of('batches')

  def batch_for_step(step):
    return make_batch(ctx.data, 'train', sampling.batch_indices(indices, cfg.batch_size, batch_seed, step))

  plan = runner.PhasePlan(
      name=name, kind=kind, step=ctx.train_step(ce_loss_fn, kind=kind, max_grad_norm=cfg.max_grad_norm),
      start=params, trainable=trainable, frozen=frozen, batch_for_step=batch_for_step,
      hparams_for_step=hparams(cfg.learning_rate, cfg.weight_decay, cfg.warmup_steps), num_steps=num_steps,
      examples_per_step=cfg.batch_size, base_dir=ctx.bundle.pretrained_dir, seed=seed_of('dropout'),
      save='full' if kind == 'full' else 'merged', validate=validate,
      eval_every=cfg.eval_every or min(per_epoch, num_steps), patience=cfg.patience,
      extra=init_record(ctx, kind, role))
  return runner.run_plan(ctx, plan, callbacks)


def ensure_original(ctx, callbacks=()) -> dict:
  """The model unlearning starts from: this run's original (trained on the whole train split when
  missing), or a given model (`Paths.train_start` False: a forget request's base)."""
  if not ctx.paths.train_start:
    return {'time_s': 0.0, 'compile_s': 0.0, 'given': ctx.paths.start}
  train = ctx.data.splits['train']
  return train_ce(ctx, ORIGINAL, indices=np.arange(len(train.label)), seed=ctx.config.seed, role='original',
                  callbacks=callbacks)


def ensure_retrain(ctx, *, noise_floor: bool = False, callbacks=()) -> dict:
  """Retrain: the recipe on the retain split from the same start, the gold standard of unlearning.
  noise_floor=True trains its twin under other seeds: a method's distance to retrain reads
  against how far two exact unlearnings land from each other."""
  retain, _ = split_indices(ctx.data)
  name = NOISE_FLOOR if noise_floor else RETRAIN
  return train_ce(ctx, name, indices=retain, seed=ctx.config.seed, role='retrain', callbacks=callbacks)

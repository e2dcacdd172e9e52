"""E2URec: the augmented model, the two teachers and the LoRA student.

Per step the student runs once on [retain; forget] (with dropout), the original runs once on
[retain; forget] (the remembering teacher on retain, the base of the forgetting teacher on
forget) and the augmented model once on forget: three passes where the original code runs six.
No teacher is stacked or duplicated: the original is the frozen base with zero adapters.
"""
from e2urec_jax import rules, seeds
from e2urec_jax.methods import common
from e2urec_jax.methods.spec import MethodSpec, register
from e2urec_jax.train.paths import ORIGINAL

AUGMENTED = 'augmented'


def ensure_augmented(ctx, callbacks=()) -> dict:
  """theta_a: the original fine-tuned on the forget set (config.augment) until it knows D_f "too well"."""
  from e2urec_jax.data import make_batch
  from e2urec_jax.methods import llmrec
  from e2urec_jax.train import runner, sampling
  llmrec.ensure_original(ctx, callbacks)
  stats = runner.done(ctx, AUGMENTED)
  if stats is not None:
    return stats
  cfg = ctx.config.augment
  original = ctx.load_params(ORIGINAL)
  _, forget = common.split_indices(ctx.data)
  seed_of = lambda phase: seeds.derive(ctx.config.seed, AUGMENTED, phase)  # noqa: E731
  trainable, frozen = common.trainable_start(ctx, cfg.mode, original, seed_of('init'), AUGMENTED)
  batch_seed = seed_of('batches')

  def batch_for_step(step):
    return make_batch(ctx.data, 'train', sampling.batch_indices(forget, cfg.batch_size, batch_seed, step))

  plan = runner.PhasePlan(
      name=AUGMENTED, kind=cfg.mode,
      step=ctx.train_step(common.ce_loss_fn, kind=cfg.mode, max_grad_norm=cfg.max_grad_norm), start=original,
      trainable=trainable, frozen=frozen,
      batch_for_step=batch_for_step,
      hparams_for_step=common.hparams(cfg.learning_rate, cfg.weight_decay), num_steps=cfg.steps,
      examples_per_step=cfg.batch_size,
      base_dir=ctx.model_dir(ORIGINAL), seed=seed_of('dropout'), save='adapters' if cfg.mode == 'lora' else 'full',
      extra=common.init_record(ctx, cfg.mode, AUGMENTED))
  return runner.run_plan(ctx, plan, callbacks)


def frozen_teachers(base, augmented, zero_adapters) -> dict:
  """e2urec_loss_fn's frozen inputs: the original's base weights, the augmented model (its
  adapters when augment.mode is 'lora', else its full parameters) and zero adapters (the
  original run as a LoRA model). One copy of each: no teacher is stacked or duplicated."""
  return {'base': base, 'augmented': augmented, 'zero_adapters': zero_adapters}


def e2urec_loss_fn(model, augmented_is_adapters: bool, use_forget_teacher: bool, use_remember_teacher: bool):
  """The E2URec step's loss (losses.e2urec_loss) over the student and the teachers' passes."""
  import jax
  from e2urec_jax import losses
  from e2urec_jax.models import answer_logits

  def loss_fn(adapters, frozen, batch, rng, hp):
    retain, forget = batch['retain'], batch['forget']
    n = retain['label'].shape[0]
    both = common.concat_batches(retain, forget)
    # [2 * batch, answer, vocab]; the teachers are deterministic (no dropout rng).
    student = answer_logits(model, frozen['base'], both, adapters=adapters, dropout_rng=rng)
    original = answer_logits(model, frozen['base'], both, adapters=frozen['zero_adapters'])
    if augmented_is_adapters:
      augmented = answer_logits(model, frozen['base'], forget, adapters=frozen['augmented'])
    else:
      augmented = answer_logits(model, frozen['augmented'], forget, adapters=frozen['zero_adapters'])
    original, augmented = jax.lax.stop_gradient((original, augmented))
    return losses.e2urec_loss(
        student[:n], student[n:], original[:n], original[n:], augmented,
        retain['answer_labels'], retain['answer_mask'], forget['answer_mask'],
        w=hp['w'], alpha=hp['alpha'], forget_only=hp['forget_only'],
        use_forget_teacher=use_forget_teacher, use_remember_teacher=use_remember_teacher)
  return loss_fn


# ------------------------------------------------------------------ the spec's pieces
def _prepare(ctx, section, callbacks):
  return {'augment': ensure_augmented(ctx, callbacks)}  # its time is part of E2URec's cost


def _teachers(ctx, section, original) -> dict:
  from e2urec_jax.train import artifacts
  base = ctx.put(ctx.base_dtype(original))
  zero = ctx.zero_adapters(original)
  if ctx.config.augment.mode == 'lora':
    aug, _ = artifacts.load_adapters(ctx.model_dir(AUGMENTED), base_dir=ctx.model_dir(ORIGINAL),
                                     expect=ctx.bundle.lora_meta)
  else:
    aug = ctx.base_dtype(ctx.load_params(AUGMENTED))
  return frozen_teachers(base, ctx.put(aug), ctx.put(zero))


def _static(ctx, section) -> dict:
  return {'augmented_is_adapters': ctx.config.augment.mode == 'lora',
          'use_forget_teacher': bool(section.use_forget_teacher),
          'use_remember_teacher': bool(section.use_remember_teacher)}


def _hparams(ctx, section):
  """w and alpha, and forget_only = 1 during the forget-only warm-up epochs."""
  from e2urec_jax.train import sampling
  _, forget = common.split_indices(ctx.data)
  warmup_steps = section.forget_epochs * sampling.steps_per_epoch(len(forget), section.batch_size)
  w, alpha = section.w, section.alpha
  return lambda step: {'w': w, 'alpha': alpha, 'forget_only': 1.0 if step < warmup_steps else 0.0}


def _batches(ctx, section, seed_of):
  return common.paired_batches(ctx, section.batch_size, seed_of)


def _record(section) -> dict:
  return {'alpha': section.alpha, 'w': section.w, 'use_forget_teacher': bool(section.use_forget_teacher),
          'use_remember_teacher': bool(section.use_remember_teacher)}


SPEC = register(MethodSpec(
    name='e2urec',
    summary='LoRA student distilled from the remembering (original) and forgetting teachers',
    defaults={
        'learning_rate': 1e-3,  # AdamW rate.
        'batch_size': 16,  # Retain and forget samples per step, each.
        'w': 0.6,  # Weight of the remembering part; 1 - w on forgetting.
        'alpha': 2.0,  # Forgetting-teacher strength: orig - alpha * relu(aug - orig).
        'steps': 1000,  # Steps in all (the original code's chosen checkpoint).
        'forget_epochs': 1,  # Forget-only warm-up epochs (an epoch = |D_f| / batch steps).
        'use_forget_teacher': True,  # Ablation switch: False distils the forget set from the original.
        'use_remember_teacher': True,  # Ablation switch: False drops the retain KD term.
    },
    rules={'w': rules.number(0, 1), 'alpha': rules.NON_NEGATIVE, 'forget_epochs': rules.NON_NEGATIVE_INT,
           'use_forget_teacher': rules.BOOLEAN, 'use_remember_teacher': rules.BOOLEAN},
    trainable='lora', loss=e2urec_loss_fn, static=_static, batches=_batches, hparams=_hparams,
    frozen=_teachers, prepare=_prepare, record=_record))

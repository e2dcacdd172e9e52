"""E2URec: the augmented model, the two teachers and the LoRA student (DESIGN.md, "The problem").

Per step the student runs once on [retain; forget] (with dropout), the original runs once on
[retain; forget] (the remembering teacher on retain, the base of the forgetting teacher on
forget) and the augmented model once on forget: three passes where the original code runs six.
"""
import jax

from e2urec_jax import losses
from e2urec_jax.methods import common
from e2urec_jax.methods.original import ensure_original
from e2urec_jax.train import artifacts, sampling, steps
from e2urec_jax.train.context import get_context
from e2urec_jax.train.loop import run_phase

AUGMENTED = 'augmented'


def ensure_augmented(ctx) -> dict:
  """theta_a: the original fine-tuned on the forget set until it knows D_f "too well"."""
  from e2urec_jax.data import make_batch
  from e2urec_jax.models import lora
  ensure_original(ctx)
  stats = common.done(ctx, AUGMENTED)
  if stats is not None:
    return stats
  cfg = ctx.config.augment
  original = ctx.load_params('original')
  _, forget = common.split_indices(ctx.data)
  seed = ctx.config.seed + 2
  if cfg.mode == 'lora':
    trainable, frozen = ctx.new_adapters(original, seed), {'base': ctx.put(ctx.base_dtype(original))}
  elif cfg.mode == 'full':
    trainable, frozen = original, {}
  else:
    raise ValueError(f'config.augment.mode must be lora or full, not {cfg.mode!r}')
  step_fn = ctx.compiled(('ce', cfg.mode), lambda: steps.make_train_step(common.ce_loss_fn(ctx.model, cfg.mode), ctx.mesh))
  result = run_phase(
      name=AUGMENTED, phase_dir=ctx.phase_dir(AUGMENTED), config=ctx.config, step_fn=step_fn,
      trainable=ctx.put(trainable), opt_state=ctx.put(steps.init_opt_state(trainable)), frozen=frozen,
      batch_for_step=lambda s: make_batch(ctx.data, 'train', sampling.batch_indices(forget, cfg.batch_size, seed, s)),
      hparams_for_step=common.hparams(cfg.learning_rate), num_steps=cfg.steps,
      examples_per_step=cfg.batch_size, mesh=ctx.mesh, base_sha256=ctx.base_sha256(ctx.model_dir('original')),
      seed=seed)
  final = jax.device_get(result.trainable)
  if cfg.mode == 'lora':
    size = artifacts.save_adapters(final, ctx.model_dir(AUGMENTED), base_dir=ctx.model_dir('original'), lora=ctx.lora_meta)
    count = lora.count_params(final)
  else:
    size, count = artifacts.save_full(ctx.model, final, ctx.model_dir(AUGMENTED)), ctx.num_base_params
  return common.finish(ctx, AUGMENTED, result, trainable_params=count, checkpoint_bytes=size)


def frozen_teachers(base, augmented, zero_adapters) -> dict:
  """e2urec_loss_fn's frozen inputs: the original's base weights, the augmented model (its
  adapters when augment.mode is 'lora', else its full parameters) and zero adapters (the
  original run as a LoRA model). One copy of each: no teacher is stacked or duplicated."""
  return {'base': base, 'augmented': augmented, 'zero_adapters': zero_adapters}


def e2urec_loss_fn(model, augmented_is_adapters: bool, use_forget_teacher: bool, use_remember_teacher: bool):
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


def unlearn_e2urec(ctx, name: str = 'e2urec', *, alpha=None, w=None, use_forget_teacher=None,
                   use_remember_teacher=None, seed=None) -> dict:
  """Trains the LoRA student; `alpha`, `w`, the ablation switches and `seed` override the config (sweeps)."""
  from e2urec_jax.models import lora
  aug_stats = ensure_augmented(ctx)
  stats = common.done(ctx, name)
  if stats is not None:
    return stats
  cfg = ctx.config.unlearn.e2urec
  alpha = cfg.alpha if alpha is None else alpha
  w = cfg.w if w is None else w
  use_ft = cfg.use_forget_teacher if use_forget_teacher is None else use_forget_teacher
  use_rt = cfg.use_remember_teacher if use_remember_teacher is None else use_remember_teacher
  seed = ctx.config.seed if seed is None else seed
  original = ctx.load_params('original')
  retain, forget = common.split_indices(ctx.data)
  base = ctx.put(ctx.base_dtype(original))
  zero = ctx.zero_adapters(original)
  by_adapters = ctx.config.augment.mode == 'lora'
  if by_adapters:
    aug, _ = artifacts.load_adapters(ctx.model_dir(AUGMENTED), base_dir=ctx.model_dir('original'),
                                    expect=ctx.lora_meta)
  else:
    aug = ctx.base_dtype(ctx.load_params(AUGMENTED))
  frozen = frozen_teachers(base, ctx.put(aug), ctx.put(zero))
  trainable = ctx.new_adapters(original, seed + 3)
  batch_size = cfg.batch_size
  warmup_steps = cfg.forget_epochs * sampling.steps_per_epoch(len(forget), batch_size)

  def batch_for_step(step):
    return common.paired_batch(ctx.data, sampling.batch_indices(retain, batch_size, seed, step),
                               sampling.batch_indices(forget, batch_size, seed + 1, step))

  base_hp = common.hparams(cfg.learning_rate, w=w, alpha=alpha)
  hp = lambda step: dict(base_hp(step), forget_only=1.0 if step < warmup_steps else 0.0)
  key = ('e2urec', by_adapters, bool(use_ft), bool(use_rt))
  step_fn = ctx.compiled(key, lambda: steps.make_train_step(
      e2urec_loss_fn(ctx.model, by_adapters, bool(use_ft), bool(use_rt)), ctx.mesh))
  result = run_phase(
      name=name, phase_dir=ctx.phase_dir(name), config=ctx.config, step_fn=step_fn,
      trainable=ctx.put(trainable), opt_state=ctx.put(steps.init_opt_state(trainable)), frozen=frozen,
      batch_for_step=batch_for_step, hparams_for_step=hp, num_steps=cfg.steps,
      examples_per_step=2 * batch_size, mesh=ctx.mesh, base_sha256=ctx.base_sha256(ctx.model_dir('original')),
      seed=seed)
  adapters = jax.device_get(result.trainable)
  size = artifacts.save_adapters(adapters, ctx.model_dir(name), base_dir=ctx.model_dir('original'), lora=ctx.lora_meta)
  unlearn_time = result.time_s
  result.time_s = unlearn_time + aug_stats['time_s']  # the method's whole cost includes theta_a
  result.compile_s += aug_stats['compile_s']
  return common.finish(ctx, name, result, trainable_params=lora.count_params(adapters), checkpoint_bytes=size,
                       extra={'unlearn_time_s': unlearn_time, 'augment_time_s': aug_stats['time_s'],
                              'alpha': alpha, 'w': w, 'use_forget_teacher': bool(use_ft),
                              'use_remember_teacher': bool(use_rt), 'seed': seed})


def train_augmented(config, workdir):
  stats = ensure_augmented(get_context(config, workdir))
  print(f'augmented: {stats["steps"]} steps in {stats["time_s"]:.1f}s')

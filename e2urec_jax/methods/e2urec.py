"""E2URec: the augmented model, the two teachers and the LoRA student.

Per step the student runs once on [retain; forget] (with dropout) and the original once on
retain (the remembering teacher). The forgetting teacher's two inputs, the original's and the
augmented model's logits on the forget set, are frozen and deterministic, so they are computed
once for every forget row before the loop (`forget_teacher_logits`) and gathered per step: two
passes a step where the original code runs six. Where that cache would not fit
(`teacher_cache_mb`) or would cost more than it saves (a forget set larger than the samples the
steps draw from it), the original runs on [retain; forget] and the augmented model on forget in
every step instead. No teacher is stacked or duplicated: the original is the frozen base with
zero adapters.
"""
import time

import numpy as np

from e2urec_jax import rules, seeds
from e2urec_jax.data import make_batch
from e2urec_jax.methods import common, llmrec, teacher_mechanism
from e2urec_jax.methods.spec import BenchStep, FrozenInputs, Helper, MethodSpec, register
from e2urec_jax.train import sampling
from e2urec_jax.train.paths import ORIGINAL

AUGMENTED = 'augmented'


def ensure_augmented(ctx, callbacks=()) -> dict:
  """theta_a: the original fine-tuned on the forget set (config.augment) until it knows D_f "too well"."""
  from e2urec_jax.train import fingerprint, runner  # no JAX in config
  llmrec.ensure_original(ctx, callbacks)
  stats = runner.done(ctx, AUGMENTED, fingerprint.of_run(ctx.config, ctx.data.digest, fingerprint.AUGMENTED))
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


def augmented_weights(frozen, augmented_is_adapters: bool) -> tuple:
  """(params, adapters) that run the augmented model from frozen_teachers' inputs."""
  if augmented_is_adapters:
    return frozen['base'], frozen['augmented']
  return frozen['augmented'], frozen['zero_adapters']


def e2urec_loss_fn(model, augmented_is_adapters: bool, use_forget_teacher: bool, use_remember_teacher: bool,
                   cached_teachers: bool = False):
  """The E2URec step's loss (losses.e2urec_loss) over the student and the teachers' passes.

  cached_teachers: the original's and the augmented model's forget-set logits are read from
  frozen['forget_teachers'] (`forget_teacher_logits`) at the batch's `forget_rows`, not computed."""
  import jax  # no JAX in config
  from e2urec_jax import losses  # no JAX in config
  from e2urec_jax.models import answer_logits  # no JAX in config

  def loss_fn(adapters, frozen, batch, rng, hp):
    retain, forget = batch['retain'], batch['forget']
    n = retain['label'].shape[0]
    both = common.concat_batches(retain, forget)
    # [2 * batch, answer, vocab]; the teachers are deterministic (no dropout rng).
    student = answer_logits(model, frozen['base'], both, adapters=adapters, dropout_rng=rng)
    if cached_teachers:
      cache, rows = frozen['forget_teachers'], batch['forget_rows']
      orig_retain = answer_logits(model, frozen['base'], retain, adapters=frozen['zero_adapters'])
      orig_forget = cache['original'][rows]
      augmented = cache['augmented'][rows] if 'augmented' in cache else None
    else:
      original = answer_logits(model, frozen['base'], both, adapters=frozen['zero_adapters'])
      orig_retain, orig_forget = original[:n], original[n:]
      augmented = None
      if use_forget_teacher:
        params, aug_adapters = augmented_weights(frozen, augmented_is_adapters)
        augmented = answer_logits(model, params, forget, adapters=aug_adapters)
    orig_retain, orig_forget, augmented = jax.lax.stop_gradient((orig_retain, orig_forget, augmented))
    return losses.e2urec_loss(
        student[:n], student[n:], orig_retain, orig_forget, augmented,
        retain['answer_labels'], retain['answer_mask'], forget['answer_mask'],
        w=hp['w'], alpha=hp['alpha'], forget_only=hp['forget_only'],
        use_forget_teacher=use_forget_teacher, use_remember_teacher=use_remember_teacher)
  return loss_fn


# ------------------------------------------------------------------ the forget-set teacher cache
def teacher_cache_plan(ctx, section) -> tuple[bool, str]:
  """(whether the forget-set teacher logits are computed once before the loop, why).

  Computing them costs one forward per forget row and teacher; the in-step passes cost one per
  row drawn, steps x batch_size in all. The cache holds [rows, answers, vocab] fp32 logits of
  each teacher on every device, so it is bounded by section.teacher_cache_mb."""
  _, forget = common.split_indices(ctx.data)
  if section.teacher_cache_mb <= 0:
    return False, 'teacher_cache_mb is 0'
  if len(forget) > section.steps * section.batch_size:
    return False, (f'the forget set ({len(forget)} rows) is larger than the {section.steps} x {section.batch_size} '
                   'samples the steps draw from it')
  answers = make_batch(ctx.data, 'train', forget[:1])['answer_positions'].shape[1]
  teachers = 2 if section.use_forget_teacher else 1
  size_mb = cache_rows(len(forget)) * answers * ctx.model.arch.vocab_size * 4 * teachers / 2**20
  if size_mb > section.teacher_cache_mb:
    return False, f'it would take {size_mb:.0f} MiB, over teacher_cache_mb={section.teacher_cache_mb:g}'
  return True, f'{size_mb:.1f} MiB'


def cache_rows(forget_rows: int) -> int:
  """The cache's row count: the forget set's, rounded up to a power of two. Seeds draw forget
  sets of different sizes; one shape for most of them keeps one compiled step for all."""
  return 1 << max(0, int(forget_rows) - 1).bit_length()


def forget_teacher_logits(ctx, frozen, augmented_is_adapters: bool, with_augmented: bool) -> dict:
  """{'original': [cache_rows, answers, vocab], 'augmented': ...} answer logits on every forget
  row, in the order of common.split_indices (zeros after them), by the same deterministic passes
  as the step's."""
  teachers = {'original': (frozen['base'], frozen['zero_adapters'])}
  if with_augmented:
    teachers['augmented'] = augmented_weights(frozen, augmented_is_adapters)
  return forget_logits(ctx, teachers)


def forget_logits(ctx, teachers: dict) -> dict:
  """{name: [cache_rows, answers, vocab]} answer logits on every forget row of the models given as
  {name: (params, adapters)}, in the order of common.split_indices (zeros after them): the cache
  `e2urec_loss_fn(cached_teachers=True)` reads (the oracle's holds the retrained model's under
  'original')."""
  from e2urec_jax.train import inference  # no JAX in config
  _, forget = common.split_indices(ctx.data)
  logits = inference.eval_logits_fn(ctx)
  parts = {name: [] for name in teachers}
  # Full batches: a partial last one would be a new shape, and a compile, for every seed's forget set size.
  for batch, n in inference.iterate_eval(ctx, 'train', forget, full_batches=True):
    for name, (params, adapters) in teachers.items():
      parts[name].append(np.asarray(logits(params, adapters, batch))[:n])
  pad = cache_rows(len(forget)) - len(forget)
  return {k: np.pad(np.concatenate(v, axis=0), ((0, pad), (0, 0), (0, 0))) for k, v in parts.items()}


# ------------------------------------------------------------------ the spec's pieces
def _teachers(ctx, section, original) -> FrozenInputs:
  """The frozen inputs, and the forget-set teacher cache where `teacher_cache_plan` says so. Its
  time is part of E2URec's cost: its FrozenInputs.build_s (MethodSpec.frozen)."""
  from e2urec_jax.train import artifacts  # no JAX in config
  base = ctx.put(ctx.base_dtype(original))
  zero = ctx.zero_adapters(original)
  by_adapters = ctx.config.augment.mode == 'lora'
  if by_adapters:
    aug, _ = artifacts.load_adapters(ctx.model_dir(AUGMENTED), base_dir=ctx.model_dir(ORIGINAL),
                                     expect=ctx.bundle.lora_meta)
  else:
    aug = ctx.base_dtype(ctx.load_params(AUGMENTED))
  frozen = frozen_teachers(base, ctx.put(aug), ctx.put(zero))
  cached, why = teacher_cache_plan(ctx, section)
  if not cached:
    print(f'e2urec: the teachers run on the forget set in every step ({why})')
    return FrozenInputs(frozen)
  start = time.perf_counter()
  cache = forget_teacher_logits(ctx, frozen, by_adapters, bool(section.use_forget_teacher))
  print(f'e2urec: forget-set teacher logits computed once ({why}, {time.perf_counter() - start:.1f} s)')
  return FrozenInputs({**frozen, 'forget_teachers': ctx.put(cache)}, build_s=time.perf_counter() - start)


def _static(ctx, section) -> dict:
  return {'augmented_is_adapters': ctx.config.augment.mode == 'lora',
          'use_forget_teacher': bool(section.use_forget_teacher),
          'use_remember_teacher': bool(section.use_remember_teacher),
          'cached_teachers': teacher_cache_plan(ctx, section)[0]}


def _hparams(ctx, section):
  """w and alpha, and forget_only = 1 during the forget-only warm-up epochs."""
  _, forget = common.split_indices(ctx.data)
  warmup_steps = section.forget_epochs * sampling.steps_per_epoch(len(forget), section.batch_size)
  w, alpha = section.w, section.alpha
  return lambda step: {'w': w, 'alpha': alpha, 'forget_only': 1.0 if step < warmup_steps else 0.0}


def _batches(ctx, section, seed_of):
  """Paired batches; with the teacher cache, also each forget sample's row in it ('forget_rows')."""
  return common.paired_batches(ctx, section.batch_size, seed_of, forget_rows=teacher_cache_plan(ctx, section)[0])


def mechanism(probe, name: str):
  """MethodSpec.diagnostic: the row's forgetting teacher measured on the forget set
  (methods/teacher_mechanism.py): needs the original and the augmented model; None for a row
  trained without the forgetting teacher, or when the augmented model is missing."""
  row = probe.rows[name]
  if not row['phase'].get('use_forget_teacher', True):
    return None
  augmented = probe.logits(AUGMENTED)
  if augmented is None:
    return None
  alpha = row['phase'].get('alpha', probe.ctx.config.unlearn.e2urec.alpha)
  return teacher_mechanism.forgetting_teacher_mechanism(
      orig=probe.logits(ORIGINAL), retrain=probe.retrain, aug=augmented, student=probe.logits(name), alpha=alpha,
      labels=probe.labels, users=probe.users, yes_id=probe.yes_id, no_id=probe.no_id,
      distance=probe.distance_to_retrain)


def _record(section) -> dict:
  return {'alpha': section.alpha, 'w': section.w, 'use_forget_teacher': bool(section.use_forget_teacher),
          'use_remember_teacher': bool(section.use_remember_teacher)}


def _bench_frozen(base, adapters, zero) -> dict:
  """The benchmark's teachers: an augmented model of LoRA adapters (its own buffers: the
  student's are donated each step), computed in every step as a run without the cache does."""
  import jax  # no JAX in config
  return frozen_teachers(base, jax.tree.map(lambda x: x.copy(), adapters), zero)


# The student forward and backward on 2 x batch samples (3 x 2) and three teacher forwards of batch
# samples each (the original on retain and forget, the augmented model on forget): 9 passes of batch.
BENCH = BenchStep(loss=lambda model: e2urec_loss_fn(model, True, True, True), frozen=_bench_frozen,
                  hparams={'w': 0.6, 'alpha': 2.0, 'forget_only': 0.0}, forward_passes=3 * 2 + 3,
                  reference='torch_reference.py')

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
        # Bound on the forget-set teacher logits computed once before the loop instead of in every
        # step (rows x answers x vocab x 4 bytes per teacher, on every device); 0: never.
        'teacher_cache_mb': 1024.0,
    },
    rules={'w': rules.number(0, 1), 'alpha': rules.NON_NEGATIVE, 'forget_epochs': rules.NON_NEGATIVE_INT,
           'use_forget_teacher': rules.BOOLEAN, 'use_remember_teacher': rules.BOOLEAN,
           'teacher_cache_mb': rules.NON_NEGATIVE},
    trainable='lora', loss=e2urec_loss_fn, static=_static, batches=_batches, hparams=_hparams,
    frozen=_teachers, record=_record, reads=('augment',), diagnostic=mechanism,
    diagnostic_report=teacher_mechanism.report_lines, featured=True, bench=BENCH,
    # The augmented model: its time is part of E2URec's cost (as 'augment_time_s'); trained on the forget set.
    helpers=(Helper(AUGMENTED, 'augmented', (ORIGINAL,), ensure_augmented, trained_on_forget=True, cost='augment',
                    mode_key='augment.mode'),)))

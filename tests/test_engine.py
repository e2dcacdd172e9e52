"""The training engine: data parallelism, resume, what E2URec may and may not touch."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import CACHE, REPO, load_config


@pytest.fixture(scope='module')
def ctx(tmp_path_factory):
  from e2urec_jax.train.context import open_run
  from e2urec_jax.train.paths import run_paths
  config = load_config('configs/demo.py:test')
  config.progress = False
  config.jax_cache_dir = CACHE
  config.checkpoint.every_steps = 3
  return open_run(config, run_paths(str(tmp_path_factory.mktemp('engine'))))


def _lora_phase(ctx, phase_dir, num_steps):
  from e2urec_jax.data import make_batch
  from e2urec_jax.methods import common
  from e2urec_jax.train import sampling
  from e2urec_jax.train.loop import PhaseOptions, run_phase
  from e2urec_jax.train.plan import PhasePlan
  params = ctx.bundle.pretrained_params
  trainable = ctx.new_adapters(params, 0)
  step_fn = ctx.train_step(common.ce_loss_fn, kind='lora')
  rows = np.arange(len(ctx.data.splits['train']))
  plan = PhasePlan(
      name='resume', kind='lora', step=step_fn, start=params, trainable=trainable, frozen={'base': ctx.put(params)},
      batch_for_step=lambda s: make_batch(ctx.data, 'train', sampling.batch_indices(rows, 8, 0, s)),
      hparams_for_step=common.hparams(1e-2), num_steps=num_steps, examples_per_step=8, base_dir='', seed=0,
      save='none')
  return run_phase(plan, PhaseOptions.from_config(ctx.config, phase_dir=phase_dir, mesh=ctx.mesh, base_sha256='base'))


def test_restore_and_continue_equals_uninterrupted_run(ctx, tmp_path):
  straight = _lora_phase(ctx, str(tmp_path / 'straight'), 7)
  _lora_phase(ctx, str(tmp_path / 'stopped'), 4)  # "killed" after its step-4 checkpoint
  resumed = _lora_phase(ctx, str(tmp_path / 'stopped'), 7)
  assert resumed.steps == straight.steps == 7
  for a, b in zip(jax.tree.leaves(jax.device_get(straight.trainable)), jax.tree.leaves(jax.device_get(resumed.trainable))):
    np.testing.assert_array_equal(a, b)
  assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(jax.device_get(straight.trainable)))


def test_checkpoint_of_another_base_is_refused(ctx, tmp_path):
  from e2urec_jax.errors import UserError
  from e2urec_jax.train.checkpoint import ResumeCheckpoints
  ckpt = ResumeCheckpoints(str(tmp_path / 'ck'), max_to_keep=1, base_sha256='aaa')
  state = {'x': np.zeros(3, np.float32)}
  ckpt.save(1, state, {})
  ckpt.close()
  other = ResumeCheckpoints(str(tmp_path / 'ck'), max_to_keep=1, base_sha256='bbb')
  with pytest.raises(UserError, match='another base model'):
    other.restore(state)


def test_e2urec_step_updates_only_adapters(ctx):
  from e2urec_jax.methods import common
  from e2urec_jax.methods.e2urec import e2urec_loss_fn, frozen_teachers
  from e2urec_jax.train import mesh as mesh_lib
  from e2urec_jax.train import steps
  params = ctx.bundle.pretrained_params
  base_before = [np.array(x) for x in jax.tree.leaves(params)]
  zero = ctx.zero_adapters(params)
  aug = jax.tree.map(lambda x: x + 0.01, ctx.new_adapters(params, 5))
  frozen = ctx.put(frozen_teachers(params, aug, zero))
  adapters = ctx.new_adapters(params, 1)
  step = steps.make_train_step(e2urec_loss_fn(ctx.model, True, True, True), ctx.mesh)
  retain, forget = common.split_indices(ctx.data)
  trainable, opt_state = ctx.put(adapters), ctx.put(steps.init_opt_state(adapters))
  hp = {'lr': 1e-2, 'weight_decay': 0.0, 'w': 0.6, 'alpha': 2.0, 'forget_only': 0.0}
  for i in range(2):
    batch = mesh_lib.put_batch(common.paired_batch(ctx.data, retain[i * 8:(i + 1) * 8], forget[i * 8:(i + 1) * 8]), ctx.mesh)
    trainable, opt_state, metrics = step(trainable, opt_state, frozen, batch, jax.random.key(i), hp)
  assert np.isfinite(float(metrics['loss']))
  for before, after in zip(base_before, jax.tree.leaves(jax.device_get(frozen['base']))):
    np.testing.assert_array_equal(before, after)  # the frozen base is bit-identical
  lora_b = [np.abs(x).max() for path, x in jax.tree_util.tree_leaves_with_path(jax.device_get(trainable))
            if 'lora_b' in jax.tree_util.keystr(path)]
  assert lora_b and max(lora_b) > 0  # and the adapters did move


def test_e2urec_loss_is_the_formula_over_separate_teacher_passes(ctx):
  """The step's batched passes (original on [retain; forget]) give the E2URec loss as computed
  from one forward per (model, set), for both kinds of augmented model (adapters, full weights)."""
  from e2urec_jax import losses
  from e2urec_jax.methods import common
  from e2urec_jax.methods.e2urec import e2urec_loss_fn, frozen_teachers
  from e2urec_jax.models import answer_logits
  params = ctx.bundle.pretrained_params
  zero = ctx.zero_adapters(params)
  student = jax.tree.map(lambda x: x + 0.01, ctx.new_adapters(params, 1))
  aug_adapters = jax.tree.map(lambda x: x + 0.02, ctx.new_adapters(params, 2))
  aug_full = jax.tree.map(lambda x: x * 1.01, params)
  retain, forget = common.split_indices(ctx.data)
  batch = common.paired_batch(ctx.data, retain[:8], forget[:8])
  r, f = batch['retain'], batch['forget']
  hp = {'w': 0.6, 'alpha': 2.0, 'forget_only': 0.0}
  run = jax.jit(lambda p, a, b: answer_logits(ctx.model, p, b, adapters=a))  # one compile for every pass
  for by_adapters, frozen in ((True, frozen_teachers(params, aug_adapters, zero)),
                              (False, frozen_teachers(params, aug_full, zero))):
    loss_fn = jax.jit(lambda t, fr, b: e2urec_loss_fn(ctx.model, by_adapters, True, True)(t, fr, b, None, hp))
    loss, _ = loss_fn(student, frozen, batch)
    aug = run(params, aug_adapters, f) if by_adapters else run(aug_full, zero, f)
    expected, _ = losses.e2urec_loss(run(params, student, r), run(params, student, f), run(params, zero, r),
                                     run(params, zero, f), aug, r['answer_labels'], r['answer_mask'],
                                     f['answer_mask'], w=0.6, alpha=2.0, forget_only=0.0,
                                     use_forget_teacher=True, use_remember_teacher=True)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


@pytest.mark.slow  # four gradient compiles (~9 s): the full suite runs it, the fast tier stays under 90 s
def test_cached_forget_teachers_give_the_in_step_loss(ctx):
  """The forget-set teacher logits computed once before the loop, gathered by each batch's
  forget_rows, give the loss (and gradients) of the step that runs the teachers itself, for both
  kinds of augmented model and without the forgetting teacher (the ablation)."""
  from e2urec_jax.methods import common
  from e2urec_jax.methods.e2urec import e2urec_loss_fn, forget_teacher_logits, frozen_teachers
  params = ctx.bundle.pretrained_params
  zero = ctx.put(ctx.zero_adapters(params))
  student = jax.tree.map(lambda x: x + 0.01, ctx.new_adapters(params, 1))
  retain, forget = common.split_indices(ctx.data)
  picked = np.array([5, 0, 3, len(forget) - 1, 2, 7, 1, 4])  # forget rows in no particular order
  batch = common.paired_batch(ctx.data, retain[:8], forget[picked])
  hp = {'w': 0.6, 'alpha': 2.0, 'forget_only': 0.0}
  augmented = (ctx.put(jax.tree.map(lambda x: x + 0.02, ctx.new_adapters(params, 2))),
               ctx.put(jax.tree.map(lambda x: x * 1.01, params)))
  # adapters with the forgetting teacher; full weights without it (the ablation): both kinds, both switches
  for by_adapters, aug, with_forget_teacher in ((True, augmented[0], True), (False, augmented[1], False)):
    frozen = frozen_teachers(ctx.put(params), aug, zero)
    cache = forget_teacher_logits(ctx, frozen, by_adapters, with_forget_teacher)
    assert cache['original'].shape[0] >= len(forget) and ('augmented' in cache) == with_forget_teacher
    assert not cache['original'][len(forget):].any()  # rows past the forget set: padding
    grad = lambda cached, fr, b: jax.jit(jax.value_and_grad(  # noqa: E731
        lambda t: e2urec_loss_fn(ctx.model, by_adapters, with_forget_teacher, True, cached)(t, fr, b, None, hp)[0]))(student)
    loss, grads = grad(False, frozen, batch)
    cached_loss, cached_grads = grad(True, {**frozen, 'forget_teachers': ctx.put(cache)},
                                     {**batch, 'forget_rows': picked.astype(np.int32)})
    np.testing.assert_allclose(float(cached_loss), float(loss), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(cached_grads), jax.tree.leaves(grads)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-6)


def test_the_teacher_cache_is_used_only_where_it_pays_and_fits(ctx):
  from e2urec_jax.methods import common
  from e2urec_jax.methods.e2urec import _batches, cache_rows, teacher_cache_plan
  assert [cache_rows(n) for n in (1, 2, 3, 700, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]
  _, forget = common.split_indices(ctx.data)
  section = ctx.config.unlearn.e2urec.copy_and_resolve_references()
  section.steps, section.batch_size = len(forget), 1
  assert teacher_cache_plan(ctx, section)[0]
  section.steps = len(forget) - 1  # fewer samples drawn than rows: computing every row costs more
  cached, why = teacher_cache_plan(ctx, section)
  assert not cached and f'forget set ({len(forget)} rows)' in why
  section.steps = 10 * len(forget)
  section.teacher_cache_mb = 1e-6
  cached, why = teacher_cache_plan(ctx, section)
  assert not cached and 'over teacher_cache_mb' in why
  section.teacher_cache_mb = 0
  assert teacher_cache_plan(ctx, section) == (False, 'teacher_cache_mb is 0')
  assert 'forget_rows' not in _batches(ctx, section, lambda phase: 7)(0)


def test_forget_rows_name_the_forget_samples_of_the_batch(ctx):
  """With the cache, each batch's forget_rows are the positions of its forget samples in the
  forget set (the cache's rows): the samples they name are the batch's, in its order."""
  from e2urec_jax.data import make_batch
  from e2urec_jax.methods import common
  from e2urec_jax.methods.e2urec import _batches
  _, forget = common.split_indices(ctx.data)
  section = ctx.config.unlearn.e2urec.copy_and_resolve_references()
  section.steps, section.batch_size = 4 * len(forget), 4
  batch_for_step = _batches(ctx, section, lambda phase: 11)
  for step in (0, 1, 5):
    batch = batch_for_step(step)
    named = make_batch(ctx.data, 'train', forget[batch['forget_rows']], length=batch['forget']['input_ids'].shape[1])
    np.testing.assert_array_equal(named['input_ids'], batch['forget']['input_ids'])
    np.testing.assert_array_equal(named['answer_labels'], batch['forget']['answer_labels'])


def test_phase_times_leave_out_what_they_should(ctx, tmp_path):
  """PhaseResult.loop_s (done.json's unlearn_time_s, the paper's accounting) leaves out the time
  spent validating, saving checkpoints and in callbacks; time_s, the phase's cost, has validation
  and saves but not the callbacks (they observe: trajectory scoring), which callbacks_s counts.
  loop_best_s is the loop time at the check that kept the model."""
  import time
  from e2urec_jax.data import make_batch
  from e2urec_jax.methods import common
  from e2urec_jax.train import callbacks, sampling
  from e2urec_jax.train.loop import PhaseOptions, run_phase
  from e2urec_jax.train.plan import PhasePlan
  params = ctx.bundle.pretrained_params
  trainable = ctx.new_adapters(params, 0)
  rows = np.arange(len(ctx.data.splits['train']))
  losses = iter([3.0, 1.0, 2.0, 2.5, 2.6])  # the 2nd check is the best

  def validate(_):
    time.sleep(0.3)
    return next(losses)

  class Slow(callbacks.Callback):
    def after_step(self, event):
      time.sleep(0.05)

  wall = time.perf_counter()
  plan = PhasePlan(
      name='timed', kind='lora', step=ctx.train_step(common.ce_loss_fn, kind='lora'), start=params,
      trainable=trainable, frozen={'base': ctx.put(params)},
      batch_for_step=lambda s: make_batch(ctx.data, 'train', sampling.batch_indices(rows, 8, 0, s)),
      hparams_for_step=common.hparams(1e-3), num_steps=10, examples_per_step=8, base_dir='', seed=0, save='none',
      validate=validate, eval_every=2, patience=10)
  result = run_phase(plan, PhaseOptions.from_config(ctx.config, phase_dir=str(tmp_path / 'timed'), mesh=ctx.mesh,
                                                    base_sha256='base', callbacks=(Slow(),)))
  wall = time.perf_counter() - wall
  validation, hooks = 5 * 0.3, 10 * 0.05
  assert hooks <= result.callbacks_s < hooks + 0.5
  assert result.time_s <= wall - result.callbacks_s  # the cost leaves the callbacks out
  assert result.time_s - result.compile_s - result.loop_s >= validation  # ... and keeps validation
  assert 0 < result.loop_s < result.time_s - validation
  assert 0 < result.loop_best_s < result.loop_s  # the step-4 check, of 10 steps


@pytest.mark.slow
def test_sharded_step_equals_single_device():
  """8 CPU devices vs 1: same loss and gradients (rtol 1e-5), in a subprocess with 8 devices."""
  import tempfile
  with tempfile.TemporaryDirectory() as workdir:
    out = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'sharding_check.py'), workdir,
                          'configs/demo.py:test'], capture_output=True, text=True, timeout=600, cwd=REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK loss1=' in out.stdout


def test_t5_base_adapters_are_under_two_percent():
  """On the paper's T5-base, q/v LoRA r=16 is 1,769,472 parameters (peft's count), < 2% of the model."""
  import transformers
  from e2urec_jax.models import abstract_params, lora, model_from_hf_config
  config = transformers.T5Config(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128)
  params = abstract_params(model_from_hf_config(config))
  adapters = jax.eval_shape(lambda: lora.init_adapters(params, jax.random.key(0), 16, lora.default_targets('t5')))
  assert lora.count_params(adapters) == 1_769_472
  assert lora.count_params(adapters) / lora.count_params(params) < 0.02

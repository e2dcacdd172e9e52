"""Callbacks see every step of a phase, and the one orbax mechanism the fault tests rely on.

checkpoint.py passes `temporary_path_class` (a public CheckpointManagerOptions field) to orbax;
the fault tests subclass orbax's AtomicRenameTemporaryPath and fail inside `finalize`, the
commit of a save. If orbax drops the option or stops committing through that class, the
first test below fails, loudly, before the fault tests start passing for the wrong reason.
"""
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from e2urec_jax.errors import UserError
from e2urec_jax.train.callbacks import Callback


def test_orbax_commits_every_save_through_the_temporary_path_class(tmp_path):
  from e2urec_jax.train.checkpoint import ResumeCheckpoints
  assert 'temporary_path_class' in ocp.CheckpointManagerOptions.__dataclass_fields__, 'orbax dropped the option'
  committed = []

  class Recording(ocp.path.atomicity.AtomicRenameTemporaryPath):
    async def finalize(self, *args, **kwargs):
      committed.append(os.path.basename(str(self.get_final())))
      return await super().finalize(*args, **kwargs)

  ckpt = ResumeCheckpoints(str(tmp_path), max_to_keep=2, base_sha256='x', temporary_path_class=Recording)
  ckpt.save(3, {'w': np.zeros(2, np.float32)}, {})
  ckpt.close()
  assert '3' in committed, f'orbax no longer commits a step through temporary_path_class.finalize: {committed}'
  assert sorted(os.listdir(tmp_path)) == ['3']


def _toy_phase(phase_dir, num_steps, callbacks, every=4):
  """run_phase on a 3-parameter model (compiles in milliseconds)."""
  from e2urec_jax.config import default_config
  from e2urec_jax.train import mesh as mesh_lib
  from e2urec_jax.train.loop import PhaseOptions, run_phase
  from e2urec_jax.train.plan import PhasePlan
  from e2urec_jax.train.timed_jit import TimedJit
  config = default_config()
  config.progress, config.checkpoint.every_steps = False, every

  def step(trainable, opt_state, frozen, batch, rng, hp):
    w = trainable['w'] - hp['lr']
    return {'w': w}, opt_state, {'loss': jnp.sum(w) + 0.0 * batch['x'].sum()}

  plan = PhasePlan(
      name='toy', kind='full', step=TimedJit(jax.jit(step)), start=None, trainable={'w': jnp.zeros(3)}, frozen={},
      batch_for_step=lambda s: {'x': np.ones((jax.device_count(), 2), np.float32)},
      hparams_for_step=lambda s: {'lr': 0.1}, num_steps=num_steps, examples_per_step=1, base_dir='', seed=0,
      save='none')
  return run_phase(plan, PhaseOptions.from_config(
      config, phase_dir=str(phase_dir), mesh=mesh_lib.make_mesh(), base_sha256='toy', opt_state={},
      callbacks=callbacks, model=lambda t: (t, None)))


class Recorder(Callback):
  def __init__(self):
    self.events, self.hps = [], []

  def hparams(self, phase, step, hp):
    self.hps.append((phase, step))
    return hp

  def after_step(self, event):
    params, _ = event.model()
    self.events.append((event.phase, event.step, event.num_steps, float(np.asarray(params['w'])[0])))


def test_callbacks_see_every_step_and_the_model_being_trained(tmp_path):
  recorder = Recorder()
  _toy_phase(tmp_path, 5, [recorder])
  assert recorder.hps == [('toy', s) for s in range(1, 6)]
  assert [(p, s, n) for p, s, n, _ in recorder.events] == [('toy', s, 5) for s in range(1, 6)]
  np.testing.assert_allclose([w for *_, w in recorder.events], [-0.1 * s for s in range(1, 6)], rtol=1e-6)


def test_a_callback_can_change_a_steps_hyperparameters(tmp_path):
  """What the fault tests' NaN learning rate does: the step runs with the callback's values."""
  class NanAt3(Callback):
    def hparams(self, phase, step, hp):
      return dict(hp, lr=math.nan) if step == 3 else hp

  with pytest.raises(UserError, match=r'toy: loss became non-finite \(nan\) at step 3 of 6'):
    _toy_phase(tmp_path, 6, [NanAt3()], every=2)
  assert sorted(os.listdir(tmp_path / 'ckpt')) == ['2']


class _Slow(Callback):
  """Sleeps in every step's hook; raises KeyboardInterrupt after step `stop_at`."""

  def __init__(self, seconds, stop_at=None):
    self.seconds, self.stop_at = seconds, stop_at

  def after_step(self, event):
    time.sleep(self.seconds)
    if event.step == self.stop_at:
      raise KeyboardInterrupt


def test_callback_time_is_left_out_of_the_cost(tmp_path):
  """time_s, a phase's cost, leaves out the time its callbacks took (trajectory scoring observes
  a method, it is not part of it): the same phase with 2.4 s of hooks costs about what it costs
  without them, and callbacks_s counts them."""
  bare = _toy_phase(tmp_path / 'bare', 8, [])
  hooked = _toy_phase(tmp_path / 'hooked', 8, [_Slow(0.3)])
  assert 8 * 0.3 <= hooked.callbacks_s < 8 * 0.3 + 0.3
  assert hooked.time_s < bare.time_s + 1.2  # counting the hooks would add 2.4 s


def test_callback_time_is_carried_across_a_resume(tmp_path):
  """The step-4 checkpoint carries the hooks' time of steps 1-3; the resumed session adds steps
  5-8 (the hooks of steps 4-6 of the interrupted session are lost with it)."""
  with pytest.raises(KeyboardInterrupt):
    _toy_phase(tmp_path, 8, [_Slow(0.2, stop_at=6)])
  result = _toy_phase(tmp_path, 8, [_Slow(0.2)])
  assert result.steps == 8
  assert 7 * 0.2 <= result.callbacks_s < 7 * 0.2 + 0.3

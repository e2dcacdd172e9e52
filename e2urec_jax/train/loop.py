"""One training phase: steps, progress, metrics, validation/early stopping, resume checkpoints.

Every method (original, retrain, augment, E2URec, baselines) runs through `run_phase`
with its own `PhasePlan` (compiled step, batch function, validation) and `PhaseOptions`
(where, on which mesh, with which callbacks), so resuming, logging, NaN handling and timing
behave the same everywhere. The loop's pieces: `_Clock` (its timings), `_Resume` (the
checkpoints it starts from and saves), `_StepMetrics` (metrics fetched in groups, checked
finite, logged) and `_EarlyStopping` (validation and the best model kept).
"""
import contextlib
import dataclasses
import json
import math
import os
import queue
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from e2urec_jax import distributed, local_files, runtime, storage
from e2urec_jax.errors import UserError
from e2urec_jax.train import mesh as mesh_lib, steps
from e2urec_jax.train.callbacks import Callback, StepEvent, checkpoint_path_class
from e2urec_jax.train.checkpoint import ResumeCheckpoints
from e2urec_jax.train.plan import PhasePlan
from e2urec_jax.train.timed_jit import TimedJit

LOG_EVERY = 10


class _Prefetch:
  """Builds host batches for the next steps on a thread while the device runs."""

  def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int = 2):
    self._queue = queue.Queue(maxsize=depth)
    self._thread = threading.Thread(target=self._fill, args=(make, start, stop), daemon=True)
    self._thread.start()

  def _fill(self, make, start, stop):
    for step in range(start, stop):
      try:
        self._queue.put((step, make(step), None))
      except BaseException as e:  # surfaced in the consumer
        self._queue.put((step, None, e))
        return

  def get(self):
    step, batch, error = self._queue.get()
    if error is not None:
      raise error
    return step, batch


@dataclasses.dataclass
class PhaseResult:
  trainable: Any
  steps: int
  time_s: float
  compile_s: float
  examples_per_s: float
  best_valid: float | None = None
  stopped_early: bool = False
  final_loss: float | None = None
  # The training loop alone, the original code's accounting: steps and data loading, without
  # compilation, validation, checkpoint saves or callbacks (time_s has all but the callbacks).
  loop_s: float = 0.0
  loop_best_s: float | None = None  # loop_s when the kept (best-valid) model was checked; None without validation
  best_step: int | None = None  # the step of the kept (best-valid) model; None without validation
  # Seconds in the callbacks' hooks: they observe the phase (trajectory scoring, a user's
  # measurements, the tests' fault injection), so time_s, the phase's cost, leaves them out.
  callbacks_s: float = 0.0


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


class _Log:
  """metrics.jsonl (+ TensorBoard events). A full disk here is a UserError like a failed checkpoint.

  `remote`: the phase folder on an object store (storage.py) when `phase_dir` is its local
  staging copy; `sync` uploads the files there (at each checkpoint and at the end)."""

  def __init__(self, phase_dir: str, remote: str | None = None):
    self._dir, self._remote = phase_dir, remote
    self._path = os.path.join(phase_dir, 'metrics.jsonl')
    self._jsonl = self._tb = None
    if not distributed.is_primary():  # one writer per shared workdir; every process has the same metrics
      return
    try:
      self._jsonl = open(self._path, 'a')
    except OSError as e:
      raise local_files.disk_error(e, f'opening {self._path}') from e
    try:
      from tensorboardX import SummaryWriter  # heavy: tensorboardX
      self._tb = SummaryWriter(os.path.join(phase_dir, 'tb'))
    except ImportError:  # TensorBoard events are optional
      self._tb = None

  def write(self, step: int, values: dict):
    if self._jsonl is None:
      return
    try:
      self._jsonl.write(json.dumps({'step': step, **values}) + '\n')
      self._jsonl.flush()
    except OSError as e:
      raise local_files.disk_error(e, f'writing {self._path}') from e
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, step)

  def sync(self):
    """Uploads metrics.jsonl and the TensorBoard events to the object store (no-op on a local workdir)."""
    if self._remote is None or self._jsonl is None:
      return
    self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()
    names = [os.path.relpath(os.path.join(root, f), self._dir) for root, _, files in os.walk(self._dir) for f in files]
    storage.sync_up(self._dir, self._remote, names)

  def close(self):
    if self._jsonl is not None:
      with contextlib.suppress(OSError):  # a full disk was already reported where it struck
        self._jsonl.close()
    if self._tb is not None:
      with contextlib.suppress(Exception):
        self._tb.close()


def _log_dir(phase_dir: str) -> str:
  """Where the phase's metrics are written: the phase folder, or for a folder on an object
  store a local staging copy holding what was uploaded before (so a resume appends to it)."""
  if not storage.is_remote(phase_dir):
    return phase_dir
  local = storage.staging_dir(phase_dir, 'log')
  if distributed.is_primary() and storage.isdir(phase_dir):
    have = storage.files_under(phase_dir)
    storage.download_files(phase_dir, local, [rel for rel in have if rel == 'metrics.jsonl' or rel.startswith('tb/')])
  return local


def _drop_metrics_after(path: str, step: int) -> None:
  """On resume, forgets the logged steps after the checkpoint (they are run again)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        keep.append(line)
    except (ValueError, KeyError, TypeError):  # a line cut short by a crash
      continue
  if len(keep) != len(lines):
    tmp = path + '.tmp'
    try:
      with open(tmp, 'w') as f:
        f.writelines(keep)
      os.replace(tmp, path)
    except OSError as e:
      raise local_files.disk_error(e, f'writing {path}') from e


@dataclasses.dataclass(frozen=True)
class PhaseOptions:
  """How a phase runs, beside what it trains (its `PhasePlan`): where, on which mesh, with
  which checkpoints, progress bar and callbacks.

  `callbacks` see every step (train/callbacks.py); `model(trainable) -> (params, adapters)`
  tells them how to evaluate the trainable tree, `ctx` (the RunContext) what with.
  `opt_state`: the optimizer state to start from (None: `steps.init_opt_state(plan.trainable)`).
  `resumable` False: no resume checkpoints, read or written (a phase whose state is no result: the
  relearning check's fine-tuned copies, eval/relearn.py); the phase always starts from the plan.
  """
  phase_dir: str
  mesh: Any
  base_sha256: str | None  # the start's content hash: checkpoints record it, a resume checks it
  every_steps: int = 0  # a resume checkpoint every this many steps (and at the end); <= 1: every step
  max_to_keep: int = 1
  progress: bool = False  # the tqdm bar
  callbacks: Sequence[Callback] = ()
  model: Callable[[Any], tuple] | None = None
  ctx: Any = None
  opt_state: Any = None
  resumable: bool = True

  @classmethod
  def from_config(cls, config, **fields) -> 'PhaseOptions':
    """The options config.checkpoint and config.progress set, and `fields`."""
    return cls(every_steps=int(config.checkpoint.every_steps), max_to_keep=config.checkpoint.max_to_keep,
               progress=bool(config.progress), **fields)


class _Clock:
  """The phase's timings. The phase's time counts across resumes (`meta['elapsed_s']`), as do its
  training loop's (`loop_s`: no compilation, validation, checkpoint saves or callbacks) and its
  callbacks' (`callbacks_s`); a checkpoint written before loop_s or callbacks_s existed reads 0."""

  def __init__(self, step_fn: TimedJit, meta: dict):
    self._step_fn = step_fn
    self._compile_before = step_fn.compile_s
    self._session = time.perf_counter()
    self._start = self._session - float(meta['elapsed_s'])
    self._loop_before = float(meta.get('loop_s') or 0.0)
    self._callbacks_before = float(meta.get('callbacks_s') or 0.0)
    self._loop = time.perf_counter()
    self._outside = 0.0  # this session's validation, checkpoint saves and callbacks
    self._callbacks = 0.0  # this session's time in the callbacks' hooks

  @contextlib.contextmanager
  def outside_loop(self, callbacks: bool = False):
    """Times a block that is no part of the training loop (and, `callbacks`, a callbacks' hook)."""
    start = time.perf_counter()
    try:
      yield
    finally:
      spent = time.perf_counter() - start
      self._outside += spent
      if callbacks:
        self._callbacks += spent

  def session_s(self) -> float:
    """Seconds of this session, its callbacks left out (what examples_per_s divides by)."""
    return time.perf_counter() - self._session - self._callbacks

  def loop_s(self) -> float:
    """Seconds of training loop so far (no compile, validation, saves, callbacks)."""
    return (self._loop_before + time.perf_counter() - self._loop - self._outside
            - self.compile_s())

  def elapsed_s(self) -> float:
    """The phase's seconds so far, across resumes, callbacks included."""
    return time.perf_counter() - self._start

  def callbacks_s(self) -> float:
    return self._callbacks_before + self._callbacks

  def compile_s(self) -> float:
    """This session's compile seconds."""
    return self._step_fn.compile_s - self._compile_before


@dataclasses.dataclass
class _State:
  """What a resume checkpoint holds: the trees and the loop's bookkeeping (`meta`)."""
  trainable: Any
  opt_state: Any
  best: Any  # the best-valid trainable; None without validation
  meta: dict

  def trees(self) -> dict:
    trees = {'trainable': self.trainable, 'opt_state': self.opt_state}
    if self.best is not None:
      trees['best'] = self.best
    return trees


class _Resume:
  """The phase's resume checkpoints: the state it starts from (its last checkpoint, else the
  plan's start), and a save every `every_steps` steps, at the end and when it stops early
  (none of them when `options.resumable` is False)."""

  def __init__(self, plan: PhasePlan, options: PhaseOptions):
    self._num_steps = plan.num_steps
    self._every = max(1, int(options.every_steps))
    self.last_saved = 0
    self._ckpt = None
    if options.resumable:
      self._ckpt = ResumeCheckpoints(os.path.join(options.phase_dir, 'ckpt'), max_to_keep=options.max_to_keep,
                                     base_sha256=options.base_sha256,
                                     temporary_path_class=checkpoint_path_class(options.callbacks, plan.name))

  def start(self, plan: PhasePlan, options: PhaseOptions) -> _State:
    """The state after the last checkpoint, or the plan's start (steps donate their inputs: the
    loop works on copies, so the caller's trees stay valid)."""
    trainable = mesh_lib.put_on_mesh(plan.trainable, options.mesh)
    opt_state = options.opt_state
    if opt_state is None:
      opt_state = mesh_lib.put_on_mesh(steps.init_opt_state(plan.trainable), options.mesh)
    trees = {'trainable': _copy(trainable), 'opt_state': opt_state}
    if plan.validate is not None:
      trees['best'] = _copy(trainable)
    meta = {'step': 0, 'elapsed_s': 0.0, 'best_valid': math.inf, 'bad_evals': 0, 'stopped': False,
            'loop_s': 0.0, 'loop_best_s': None, 'best_step': None, 'callbacks_s': 0.0}
    if self._ckpt is not None and self._ckpt.latest_step() is not None:
      trees, meta = self._ckpt.restore(trees)
      trees = mesh_lib.put_replicated(trees, options.mesh)
    self.last_saved = int(meta['step'])
    return _State(trainable=trees['trainable'], opt_state=trees['opt_state'], best=trees.get('best'), meta=meta)

  def due(self, step: int, stopped: bool) -> bool:
    if self._ckpt is None:
      return False
    return step % self._every == 0 or step == self._num_steps or stopped

  def save(self, step: int, state: _State, clock: _Clock) -> None:
    state.meta.update(step=step, elapsed_s=clock.elapsed_s(), loop_s=clock.loop_s(),
                      callbacks_s=clock.callbacks_s())
    self._ckpt.save(step, state.trees(), state.meta)
    self.last_saved = step

  def close(self):
    if self._ckpt is not None:
      self._ckpt.close()


def _non_finite(name: str, what: str, value: float, step: int, num_steps: int, last_saved: int,
                phase_dir: str) -> UserError:
  return UserError(f'{name}: {what} became non-finite ({value}) at step {step} of {num_steps}; '
                   f'the last good checkpoint (step {last_saved}) is kept in {phase_dir}/ckpt; '
                   'lower the learning rate and rerun the same command to resume from it')


class _StepMetrics:
  """The steps' device metrics, fetched in groups (no per-step sync), checked finite and logged."""

  def __init__(self, plan: PhasePlan, phase_dir: str, start_step: int, log: _Log, bar, clock: _Clock):
    self._plan, self._phase_dir, self._start_step = plan, phase_dir, start_step
    self._log, self._bar, self._clock = log, bar, clock
    self._pending = []  # (step, device metrics) not yet fetched
    self.last_loss = None

  def add(self, step: int, metrics) -> None:
    self._pending.append((step, metrics))

  def flush(self, step_now: int, last_saved: int) -> None:
    """Fetches the pending metrics; a non-finite one is a UserError naming its step."""
    plan = self._plan
    fetched = jax.device_get([m for _, m in self._pending])
    for (s, _), m in zip(self._pending, fetched):
      values = {k: float(v) for k, v in m.items()}
      if not all(math.isfinite(v) for v in values.values()):
        bad = 'loss' if not math.isfinite(values.get('loss', 0.0)) else next(
            k for k, v in values.items() if not math.isfinite(v))
        raise _non_finite(plan.name, bad, values[bad], s + 1, plan.num_steps, last_saved, self._phase_dir)
      self.last_loss = values['loss']
    if self._pending:
      values['examples_per_s'] = ((step_now - self._start_step) * plan.examples_per_step
                                  / max(self._clock.session_s(), 1e-9))
      self._log.write(step_now, values)
      self._bar.set_postfix(loss=f'{self.last_loss:.4f}', ex_s=f'{values["examples_per_s"]:.0f}', refresh=False)
    self._pending = []


class _EarlyStopping:
  """`plan.validate(trainable)` (lower is better) every `plan.eval_every` steps and at the last,
  logged as `plan.valid_key`: the best checked model is kept, and the phase stops after
  `plan.patience` checks without improvement."""

  def __init__(self, plan: PhasePlan, phase_dir: str, log: _Log):
    self._plan, self._phase_dir, self._log = plan, phase_dir, log

  def due(self, step: int) -> bool:
    plan = self._plan
    return plan.validate is not None and bool(plan.eval_every) and (
        step % plan.eval_every == 0 or step == plan.num_steps)

  def check(self, step: int, state: _State, clock: _Clock, last_saved: int) -> None:
    """Validates the model after `step`; updates state.best and state.meta (best_valid, bad_evals,
    stopped, loop_best_s, best_step)."""
    plan, meta = self._plan, state.meta
    loop_at_check = clock.loop_s()
    with clock.outside_loop():
      valid = float(plan.validate(state.trainable))
      if not math.isfinite(valid):
        raise _non_finite(plan.name, plan.valid_key, valid, step, plan.num_steps, last_saved, self._phase_dir)
      self._log.write(step, {plan.valid_key: valid})
      if valid < meta['best_valid']:
        meta['best_valid'], meta['bad_evals'], state.best = valid, 0, _copy(state.trainable)
        meta['loop_best_s'], meta['best_step'] = loop_at_check, step
      else:
        meta['bad_evals'] += 1
        if meta['bad_evals'] > plan.patience:
          meta['stopped'] = True


def _after_step(plan: PhasePlan, options: PhaseOptions, step: int, trainable, clock: _Clock) -> None:
  """The callbacks' after_step hooks, timed as callbacks (outside the loop and the phase's cost)."""
  model = options.model
  event = StepEvent(phase=plan.name, step=step, num_steps=plan.num_steps, trainable=trainable,
                    model=None if model is None else (lambda t=trainable: model(t)), ctx=options.ctx)
  with clock.outside_loop(callbacks=True):
    for cb in options.callbacks:
      cb.after_step(event)


def _hparams(plan: PhasePlan, options: PhaseOptions, step: int) -> dict:
  """Step `step`'s hyperparameters (counting from 0), as the callbacks adjust them, as device scalars."""
  hp = plan.hparams_for_step(step)
  for cb in options.callbacks:
    hp = cb.hparams(plan.name, step + 1, hp)
  return {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}


def _progress_bar(plan: PhasePlan, options: PhaseOptions, start_step: int):
  return tqdm(total=plan.num_steps, initial=start_step, desc=plan.name, disable=not options.progress,
              dynamic_ncols=True, leave=True,
              mininterval=0.1 if runtime.interactive() else runtime.LOG_BAR_INTERVAL_S)


def run_phase(plan: PhasePlan, options: PhaseOptions) -> PhaseResult:
  """Runs (or resumes) `plan.num_steps` steps of `plan.step`; returns the final (or best-valid)
  trainable tree.

  With `plan.validate`, the best checked model is kept and returned (`_EarlyStopping`).
  A non-finite loss, gradient norm or validation loss stops the phase with a UserError that
  names the step; checkpoints are only written after the metrics before them were checked,
  so the last checkpoint on disk is always a finite one. Steps and checkpoints count from 1
  (checkpoint N holds the state after N steps).
  """
  phase_dir, num_steps = options.phase_dir, plan.num_steps
  storage.makedirs(phase_dir)
  resume = _Resume(plan, options)
  state = resume.start(plan, options)
  start_step = int(state.meta['step'])
  log_dir = _log_dir(phase_dir)
  _drop_metrics_after(os.path.join(log_dir, 'metrics.jsonl'), start_step)
  log = _Log(log_dir, remote=phase_dir if log_dir != phase_dir else None)
  base_key = jax.random.key(plan.seed)
  clock = _Clock(plan.step, state.meta)
  bar = _progress_bar(plan, options, start_step)
  metrics = _StepMetrics(plan, phase_dir, start_step, log, bar, clock)
  stopping = _EarlyStopping(plan, phase_dir, log)

  def save(step_now):
    metrics.flush(step_now, resume.last_saved)
    with clock.outside_loop():
      resume.save(step_now, state, clock)
      log.sync()

  step = start_step
  done = state.meta['stopped'] or start_step >= num_steps
  prefetch = None if done else _Prefetch(plan.batch_for_step, start_step, num_steps)
  try:
    while not state.meta['stopped'] and step < num_steps:
      got_step, host_batch = prefetch.get()
      if got_step != step:
        raise RuntimeError(f'{plan.name}: the batch prefetched is of step {got_step}, not of step {step}')
      batch = mesh_lib.put_batch(host_batch, options.mesh)
      hp = _hparams(plan, options, step)
      rng = jax.random.fold_in(base_key, step)
      state.trainable, state.opt_state, step_metrics = plan.step(
          state.trainable, state.opt_state, plan.frozen, batch, rng, hp)
      metrics.add(step, step_metrics)
      step += 1
      bar.update(1)
      if step % LOG_EVERY == 0:
        metrics.flush(step, resume.last_saved)
      if stopping.due(step):
        metrics.flush(step, resume.last_saved)
        stopping.check(step, state, clock, resume.last_saved)
      if resume.due(step, state.meta['stopped']):
        save(step)
      if options.callbacks:
        _after_step(plan, options, step, state.trainable, clock)
    metrics.flush(step, resume.last_saved)
    log.sync()
  finally:
    bar.close()
    log.close()
    resume.close()
  return _result(plan, state, clock, metrics, step, start_step)


def _result(plan: PhasePlan, state: _State, clock: _Clock, metrics: _StepMetrics, step: int,
            start_step: int) -> PhaseResult:
  meta, validated = state.meta, plan.validate is not None
  callbacks_s = clock.callbacks_s()
  return PhaseResult(
      trainable=state.best if state.best is not None else state.trainable, steps=step,
      time_s=clock.elapsed_s() - callbacks_s, compile_s=clock.compile_s(),
      examples_per_s=(step - start_step) * plan.examples_per_step / max(clock.session_s(), 1e-9),
      best_valid=float(meta['best_valid']) if validated else None, stopped_early=bool(meta['stopped']),
      final_loss=metrics.last_loss, loop_s=max(0.0, clock.loop_s()),
      loop_best_s=None if not validated or meta.get('loop_best_s') is None else float(meta['loop_best_s']),
      best_step=None if not validated or meta.get('best_step') is None else int(meta['best_step']),
      callbacks_s=callbacks_s)

"""One training phase: steps, progress, metrics, validation/early stopping, resume checkpoints.

Every method (original, retrain, augment, E2URec, baselines) runs through `run_phase`
with its own compiled step and batch function, so resuming, logging, NaN handling and
timing behave the same everywhere.
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

from e2urec_jax import runtime, storage
from e2urec_jax.errors import UserError
from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train.callbacks import Callback, StepEvent, checkpoint_path_class
from e2urec_jax.train.checkpoint import ResumeCheckpoints

LOG_EVERY = 10


class TimedJit:
  """A jitted function compiled ahead of time per input signature, with compile seconds counted."""

  def __init__(self, jitted):
    self._jitted = jitted
    self._compiled = {}
    self.compile_s = 0.0

  def __call__(self, *args):
    key = tuple((tuple(x.shape), str(x.dtype)) if hasattr(x, 'shape') else x for x in jax.tree.leaves(args))
    fn = self._compiled.get(key)
    if fn is None:
      start = time.perf_counter()
      fn = self._jitted.lower(*args).compile()
      self.compile_s += time.perf_counter() - start
      self._compiled[key] = fn
    return fn(*args)


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
    from e2urec_jax import distributed
    if not distributed.is_primary():  # one writer per shared workdir; every process has the same metrics
      return
    try:
      self._jsonl = open(self._path, 'a')
    except OSError as e:
      raise runtime.disk_error(e, f'opening {self._path}') from e
    try:
      from tensorboardX import SummaryWriter
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
      raise runtime.disk_error(e, f'writing {self._path}') from e
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
  from e2urec_jax import distributed
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
      raise runtime.disk_error(e, f'writing {path}') from e


def run_phase(*, name: str, phase_dir: str, config, step_fn: TimedJit, trainable, opt_state, frozen,
              batch_for_step: Callable[[int], Any], hparams_for_step: Callable[[int], dict],
              num_steps: int, examples_per_step: int, mesh, base_sha256: str | None,
              validate: Callable[[Any], float] | None = None, eval_every: int = 0,
              patience: int = 0, seed: int = 0, callbacks: Sequence[Callback] = (),
              model: Callable[[Any], tuple] | None = None, ctx=None, valid_key: str = 'valid_loss') -> PhaseResult:
  """Runs (or resumes) `num_steps` steps; returns the final (or best-valid) trainable tree.

  `callbacks` see every step (train/callbacks.py); `model(trainable) -> (params, adapters)`
  tells them how to evaluate the trainable tree, `ctx` (the RunContext) what with.
  `validate(trainable)` (lower is better) is checked every `eval_every` steps and logged as
  `valid_key`; the best checked model is kept and returned, and the phase stops after
  `patience` checks without improvement.

  A non-finite loss, gradient norm or validation loss stops the phase with a UserError that
  names the step; checkpoints are only written after the metrics before them were checked,
  so the last checkpoint on disk is always a finite one. Steps and checkpoints count from 1
  (checkpoint N holds the state after N steps).
  """
  storage.makedirs(phase_dir)
  ckpt = ResumeCheckpoints(os.path.join(phase_dir, 'ckpt'), max_to_keep=config.checkpoint.max_to_keep,
                           base_sha256=base_sha256,
                           temporary_path_class=checkpoint_path_class(callbacks, name))
  # Steps donate their inputs: work on copies so the caller's trees stay valid.
  state = {'trainable': _copy(trainable), 'opt_state': opt_state}
  if validate is not None:
    state['best'] = _copy(trainable)
  meta = {'step': 0, 'elapsed_s': 0.0, 'best_valid': math.inf, 'bad_evals': 0, 'stopped': False,
          'loop_s': 0.0, 'loop_best_s': None, 'best_step': None, 'callbacks_s': 0.0}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    state = mesh_lib.put_replicated(state, mesh)
  start_step = int(meta['step'])
  every = max(1, int(config.checkpoint.every_steps))
  log_dir = _log_dir(phase_dir)
  _drop_metrics_after(os.path.join(log_dir, 'metrics.jsonl'), start_step)
  log = _Log(log_dir, remote=phase_dir if log_dir != phase_dir else None)
  compile_before = step_fn.compile_s
  base_key = jax.random.key(seed)
  t_session = time.perf_counter()
  t_start = t_session - float(meta['elapsed_s'])  # phase time counts across resumes
  loop_before = float(meta.get('loop_s') or 0.0)  # (a checkpoint written before loop_s existed: 0)
  t_loop = time.perf_counter()
  outside_loop = 0.0  # this session's validation, checkpoint saves and callbacks
  callbacks_before = float(meta.get('callbacks_s') or 0.0)  # (a checkpoint written before callbacks_s: 0)
  callbacks_now = 0.0  # this session's time in the callbacks' hooks

  def session_s():
    """Seconds of this session, its callbacks left out (what examples_per_s divides by)."""
    return time.perf_counter() - t_session - callbacks_now

  def loop_now():
    """Seconds of training loop so far (the loop's time: no compile, validation, saves, callbacks)."""
    return (loop_before + time.perf_counter() - t_loop - outside_loop
            - (step_fn.compile_s - compile_before))
  bar = tqdm(total=num_steps, initial=start_step, desc=name, disable=not config.progress,
             dynamic_ncols=True, leave=True,
             mininterval=0.1 if runtime.interactive() else runtime.LOG_BAR_INTERVAL_S)
  pending = []  # (step, device metrics) not yet fetched: fetched in groups, no per-step sync
  last_saved = start_step
  trainable, opt_state = state['trainable'], state['opt_state']
  best = state.get('best')
  stop = meta['stopped'] or start_step >= num_steps
  prefetch = None if stop else _Prefetch(batch_for_step, start_step, num_steps)
  step = start_step
  last_loss = None

  def flush(step_now):
    nonlocal pending, last_loss
    fetched = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, fetched):
      values = {k: float(v) for k, v in m.items()}
      if not all(math.isfinite(v) for v in values.values()):
        bad = 'loss' if not math.isfinite(values.get('loss', 0.0)) else next(
            k for k, v in values.items() if not math.isfinite(v))
        raise UserError(f'{name}: {bad} became non-finite ({values[bad]}) at step {s + 1} of {num_steps}; '
                        f'the last good checkpoint (step {last_saved}) is kept in {phase_dir}/ckpt; '
                        'lower the learning rate and rerun the same command to resume from it')
      last_loss = values['loss']
    if pending:
      values['examples_per_s'] = (step_now - start_step) * examples_per_step / max(session_s(), 1e-9)
      log.write(step_now, values)
      bar.set_postfix(loss=f'{last_loss:.4f}', ex_s=f'{values["examples_per_s"]:.0f}', refresh=False)
    pending = []

  def save(step_now):
    nonlocal last_saved, outside_loop
    flush(step_now)
    t_save = time.perf_counter()
    saved = {'trainable': trainable, 'opt_state': opt_state}
    if best is not None:
      saved['best'] = best
    meta.update(step=step_now, elapsed_s=time.perf_counter() - t_start, loop_s=loop_now(),
                callbacks_s=callbacks_before + callbacks_now)
    ckpt.save(step_now, saved, meta)
    log.sync()
    last_saved = step_now
    outside_loop += time.perf_counter() - t_save

  try:
    while not stop and step < num_steps:
      got_step, host_batch = prefetch.get()
      assert got_step == step
      batch = mesh_lib.put_batch(host_batch, mesh)
      hp = hparams_for_step(step)
      for cb in callbacks:
        hp = cb.hparams(name, step + 1, hp)
      hp = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
      rng = jax.random.fold_in(base_key, step)
      trainable, opt_state, metrics = step_fn(trainable, opt_state, frozen, batch, rng, hp)
      pending.append((step, metrics))
      step += 1
      bar.update(1)
      if step % LOG_EVERY == 0:
        flush(step)
      if validate is not None and eval_every and (step % eval_every == 0 or step == num_steps):
        flush(step)
        loop_at_check, t_valid = loop_now(), time.perf_counter()
        valid = float(validate(trainable))
        if not math.isfinite(valid):
          raise UserError(f'{name}: {valid_key} became non-finite ({valid}) at step {step} of {num_steps}; '
                          f'the last good checkpoint (step {last_saved}) is kept in {phase_dir}/ckpt; '
                          'lower the learning rate and rerun the same command to resume from it')
        log.write(step, {valid_key: valid})
        if valid < meta['best_valid']:
          meta['best_valid'], meta['bad_evals'], best = valid, 0, _copy(trainable)
          meta['loop_best_s'], meta['best_step'] = loop_at_check, step
        else:
          meta['bad_evals'] += 1
          if meta['bad_evals'] > patience:
            stop = meta['stopped'] = True
        outside_loop += time.perf_counter() - t_valid
      if step % every == 0 or step == num_steps or stop:
        save(step)
      if callbacks:
        event = StepEvent(phase=name, step=step, num_steps=num_steps, trainable=trainable,
                          model=None if model is None else (lambda t=trainable: model(t)), ctx=ctx)
        t_callbacks = time.perf_counter()
        for cb in callbacks:
          cb.after_step(event)
        spent = time.perf_counter() - t_callbacks
        callbacks_now += spent
        outside_loop += spent
    flush(step)
    log.sync()
  finally:
    bar.close()
    log.close()
    ckpt.close()
  callbacks_s = callbacks_before + callbacks_now
  elapsed = time.perf_counter() - t_start - callbacks_s
  final = best if best is not None else trainable
  done_steps = step - start_step
  return PhaseResult(
      trainable=final, steps=step, time_s=elapsed, compile_s=step_fn.compile_s - compile_before,
      examples_per_s=done_steps * examples_per_step / max(session_s(), 1e-9),
      best_valid=None if validate is None else float(meta['best_valid']), stopped_early=bool(meta['stopped']),
      final_loss=last_loss, loop_s=max(0.0, loop_now()),
      loop_best_s=None if validate is None or meta.get('loop_best_s') is None else float(meta['loop_best_s']),
      best_step=None if validate is None or meta.get('best_step') is None else int(meta['best_step']),
      callbacks_s=callbacks_s)

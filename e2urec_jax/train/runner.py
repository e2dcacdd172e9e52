"""The one runner: a training phase declared as a `PhasePlan` -> steps, the published model, stats.

Every model of a run goes through `run_plan`: the original, the retrained ones, the shard
models, the augmented model and every unlearning method. A phase whose result is in place
(done.json and its model) is not run again, so rerunning a command resumes.
"""
import contextlib
import os
from typing import Any, Callable

import jax

from e2urec_jax import distributed, runtime, stamps, storage
from e2urec_jax.models import lora
from e2urec_jax.train import artifacts, fingerprint, inference
from e2urec_jax.train.context import peak_memory_bytes
from e2urec_jax.train.loop import PhaseOptions, PhaseResult, run_phase
from e2urec_jax.train.plan import PhasePlan  # noqa: F401  (methods build plans as runner.PhasePlan)

SAVES = ('full', 'merged', 'adapters', 'none')


def done(ctx, name: str, record: dict | None = None):
  """The stats of a finished phase whose model is still in place and intact, else None.

  record: the phase's fingerprint (train/fingerprint.py); work of other settings in its folder
  is refused, and a new phase records it. A published model whose files differ from their
  stamp is removed, so the phase is trained again (resuming its last checkpoint if one is left)."""
  if record is not None:
    fingerprint.claim(ctx.workdir, name, ctx.phase_dir(name), ctx.model_dir(name), record)
  stats = artifacts.read_done(ctx.phase_dir(name))
  if stats is None or not storage.exists(ctx.model_dir(name)):
    return None
  broken = corrupt_parts(ctx, name)
  distributed.barrier(f'verified-{name}')  # every process has looked before anything is removed
  if not broken:
    return stats
  if distributed.is_primary():
    for part, error in broken:
      print(f'repair: {error.path} is corrupt; training {part} again')
      storage.rmtree(ctx.model_dir(part))
      with contextlib.suppress(FileNotFoundError):
        storage.remove(os.path.join(ctx.phase_dir(part), 'done.json'))
    with contextlib.suppress(FileNotFoundError):
      storage.remove(os.path.join(ctx.phase_dir(name), 'done.json'))
  distributed.barrier(f'repaired-{name}')
  return None


def corrupt_parts(ctx, name: str) -> list:
  """[(phase, stamps.Corrupt)] of the published model of `name` (each shard model of an ensemble)."""
  path = ctx.model_dir(name)
  parts = [name]
  if inference.is_ensemble(path):
    try:
      parts = list(runtime.read_json(os.path.join(path, inference.ENSEMBLE_FILE))['shards'])
    except (ValueError, KeyError):
      return [(name, stamps.Corrupt(f'{path}/{inference.ENSEMBLE_FILE} is unreadable', folder=path,
                                    path=os.path.join(path, inference.ENSEMBLE_FILE)))]
  out = []
  for part in parts:
    try:
      artifacts.verify(ctx.model_dir(part))
    except stamps.Corrupt as e:
      out.append((part, e))
  return out


def loop_time(result: PhaseResult, to_best: bool = True) -> float:
  """The paper's accounting of a phase's time: its training loop alone (no compilation,
  validation, checkpoint saves or callbacks), up to the check that kept the model when the
  phase validates and `to_best` (the original code drops the epochs after the best one)."""
  return result.loop_best_s if to_best and result.loop_best_s is not None else result.loop_s


def phase_stats(ctx, result: PhaseResult, *, trainable_params: int, checkpoint_bytes: int, extra=None,
                time_to_best: bool = True) -> dict:
  """done.json of a phase: costs, size, outcome. time_s: the whole cost (callbacks_s, the time the
  callbacks observed the phase, left out); unlearn_time_s: the loop (loop_time)."""
  return {
      'time_s': result.time_s, 'compile_s': result.compile_s, 'unlearn_time_s': loop_time(result, time_to_best),
      'callbacks_s': result.callbacks_s,
      'steps': result.steps,
      'examples_per_s': result.examples_per_s, 'trainable_params': int(trainable_params),
      'trainable_fraction': trainable_params / max(ctx.bundle.num_base_params, 1),
      'checkpoint_bytes': int(checkpoint_bytes), 'peak_memory_bytes': peak_memory_bytes(),
      'best_valid': result.best_valid, 'best_step': result.best_step, 'stopped_early': result.stopped_early,
      'final_loss': result.final_loss,
      **(extra or {})}


def evaluation_weights(ctx, plan: PhasePlan) -> Callable[[Any], tuple]:
  """trainable -> (params, adapters) as evaluation runs the model being trained."""
  if plan.kind == 'lora':
    return lambda trainable: (plan.frozen['base'], trainable)
  zeros = ctx.put(ctx.zero_adapters(plan.start))
  return lambda trainable: (trainable, zeros)


def run_plan(ctx, plan: PhasePlan, callbacks=()) -> dict:
  """Runs `plan` (or resumes it), publishes its model and writes its stats; returns them.

  A method's cost includes the models trained for it (`plan.prior`): its time and compile
  time are the sums, and each prior's own time is recorded as '<prior>_time_s'; its
  'unlearn_time_s' is its own training loop alone (the paper's accounting)."""
  if plan.save not in SAVES:
    raise ValueError(f'{plan.name}: save must be one of {SAVES}, not {plan.save!r}')
  options = PhaseOptions.from_config(
      ctx.config, phase_dir=ctx.phase_dir(plan.name), mesh=ctx.mesh, base_sha256=artifacts.content_hash(plan.base_dir),
      callbacks=tuple(callbacks), model=evaluation_weights(ctx, plan) if callbacks else None, ctx=ctx)
  result = run_phase(plan, options)
  final = jax.device_get(result.trainable)
  trainable_params = lora.count_params(final) if plan.kind == 'lora' else ctx.bundle.num_base_params
  path = ctx.model_dir(plan.name)
  if plan.save == 'full':
    size = artifacts.save_full(ctx.model, final, path)
  elif plan.save == 'merged':
    merged = lora.merge(plan.start, final, ctx.config.lora.alpha / ctx.config.lora.r)
    size = artifacts.save_full(ctx.model, jax.device_get(merged), path)
  elif plan.save == 'adapters':
    size = artifacts.save_adapters(final, path, base_dir=plan.base_dir, lora=ctx.bundle.lora_meta)
  else:
    size = 0
  extra = {}
  if plan.prior:
    for name, stats in plan.prior.items():
      result.time_s += stats['time_s']
      result.compile_s += stats['compile_s']
      extra[f'{name}_time_s'] = stats['time_s']
  stats = phase_stats(ctx, result, trainable_params=trainable_params, checkpoint_bytes=size,
                      extra={**extra, **plan.extra}, time_to_best=plan.time_to_best)
  artifacts.write_done(ctx.phase_dir(plan.name), stats)
  return stats

"""`run`: prepare -> original -> retrain -> augment -> every unlearning method -> evaluate -> report.

With config.seeds listing several seeds, everything a seed decides (forget users, shards,
initialisation, data order, original, retrain, noise floor, augmented model, the methods of
config.repeat_methods) runs once per seed on the same prepared data, sharing compiled steps;
the report gives per-seed rows, mean ± std and paired comparisons (eval/seed_report.py).

Each phase is skipped when its result is already in the workdir, so rerunning the same
command after an interruption resumes where it stopped; a phase trained with other settings
is refused before any work unless `restart` asks to train it again (resume.py).
"""
import os
import time

import jax

from e2urec_jax import backbone, config as config_lib, distributed, resume, rules, runtime, storage
from e2urec_jax.data.protocol import reseeded
from e2urec_jax.errors import UserError
from e2urec_jax.eval import relearn, report, report_merge, seed_report
from e2urec_jax.eval.evaluate import available_models, verify_models, write_results
from e2urec_jax.eval.trajectory import TrajectoryRecorder
from e2urec_jax.methods import llmrec, runner, spec
from e2urec_jax.train import context, paths
from e2urec_jax.train.paths import ORIGINAL


def seed_setup(first, seed: int):
  """(config, paths, data) of one more seed: the first seed's data with this seed's forget set
  and shards, its own folders under <workdir>/seeds/<seed>/."""
  config = first.config.copy_and_resolve_references()
  config.seed = int(seed)
  return config, paths.seed_paths(first.workdir, seed), reseeded(first.data, config.data, seed)


def seed_context(first, seed: int, setup=None):
  """The run context of one more seed (seed_setup's, or `setup`), with the first seed's mesh
  and compiled steps."""
  config, seed_paths, data = setup or seed_setup(first, seed)
  ctx = context.open_run(config, seed_paths, data=data, mesh=first.mesh)
  ctx.share_compiled(first)  # same model, same shapes: a step compiled once serves every seed
  return ctx


def seed_rows(config, rows, first_seed: bool):
  """The rows a seed runs: all of them on the first seed; config.repeat_methods' plain rows on the others."""
  if first_seed:
    return rows
  repeat = set(rules.split_list(config.repeat_methods))
  return [row for row in rows if row.method in repeat and row.name == row.method]


def train_seed(ctx, rows, callbacks=()) -> list[str]:
  """Original, retrain, noise floor and the rows' methods of one seed; returns the report's names."""
  llmrec.ensure_original(ctx, callbacks)
  llmrec.ensure_retrain(ctx, callbacks=callbacks)
  if ctx.config.eval.noise_floor:
    llmrec.ensure_retrain(ctx, noise_floor=True, callbacks=callbacks)
  every = int(ctx.config.eval.trajectory_every)
  hooks = tuple(callbacks)
  if every > 0:  # after the retrain: each point is scored against it
    hooks += (TrajectoryRecorder([row.name for row in rows], every, ctx.config.eval.trajectory_test_samples),)
  for row in rows:
    runner.run_row(ctx, row, hooks)
  return [ORIGINAL, llmrec.RETRAIN] + [row.name for row in rows]


def evaluate_seeds(config, workdir) -> dict:
  """Re-scores every finished model of every seed of a run over several seeds and rewrites its report."""
  seeds = config_lib.experiment_seeds(config)
  config.seed = seeds[0]
  first = context.open_run(config, paths.run_paths(workdir))
  trained = {}
  for i, seed in enumerate(seeds):
    layout = first.paths if i == 0 else paths.seed_paths(first.workdir, seed)
    if not storage.isdir(layout.model_dir(llmrec.RETRAIN)):  # a seed not trained (yet): nothing to score
      continue
    ctx = first if i == 0 else seed_context(first, seed)
    trained[seed] = (ctx, available_models(ctx))
    verify_models(ctx, trained[seed][1])  # every seed's, before any scoring
  per_seed = {seed: write_results(ctx, names, order=spec.report_order(), write=False)
              for seed, (ctx, names) in trained.items()}
  if not per_seed:
    raise UserError(f'no retrained model in {workdir} for any of the seeds {config.seeds}: run `retrain` first')
  return write_seeds(first, per_seed, order=spec.report_order(), extra=backbone_entry(config))


def evaluate_model(config, workdir, model: str) -> dict:
  """`evaluate --model=model`: that model's rows scored again on every seed that trained it and merged into
  the existing report (eval/report_merge.py), every other row kept; with no readable report, a report of
  what was scored. Prints a line saying which."""
  seeds = config_lib.experiment_seeds(config)
  config.seed = seeds[0]
  first = context.open_run(config, paths.run_paths(workdir), read_only=True)
  if not storage.isdir(first.model_dir(model)):
    raise UserError(f'--model={model}: no such model in {workdir}/models; one of {", ".join(available_models(first))}')
  scored = {}
  for i, seed in enumerate(seeds):
    layout = first.paths if i == 0 else paths.seed_paths(first.workdir, seed)
    if not storage.isdir(layout.model_dir(llmrec.RETRAIN)) or not storage.isdir(layout.model_dir(model)):
      continue  # a seed that did not train it (config.repeat_methods): its rows stay
    ctx = first if i == 0 else seed_context(first, seed)
    names = report_merge.rows_scored_with(model, available_models(ctx))
    if i == 0:
      resume.check_models(config, workdir, ['retrain', 'retrain_seed2', *names])
    verify_models(ctx, names)
    scored[seed] = (ctx, names)
  per_seed = {seed: write_results(ctx, names, order=spec.report_order(), write=False)
              for seed, (ctx, names) in scored.items()}
  replaced = report.ordered_methods(list(dict.fromkeys(n for _, names in scored.values() for n in names)),
                                   spec.report_order())
  path = os.path.join(first.workdir, 'results.json')
  old, why = None, f'no earlier report in {workdir}'
  if storage.exists(path):
    try:
      old = runtime.read_json(path)
      why = None if report_merge.readable(old) else f'{path} is not a report of this tool'
    except ValueError as e:
      why = f'{path} is not valid JSON ({e})'
    old = old if why is None else None
  merged = report_merge.merge(report_merge.split_seeds(old) if old else {}, per_seed, replaced,
                              order=spec.report_order())
  results = report_merge.assemble(merged, extra=backbone_entry(config))
  if distributed.is_primary():
    report.write_report(first.workdir, results, order=spec.report_order())
    kept = [n for n in results['methods'] if n not in replaced]
    if why is None:
      print(f'evaluate: merged the rows of {", ".join(replaced)} into {path}'
            + (f'; kept {", ".join(kept)} as they were' if kept else ''))
    else:
      print(f'evaluate: {why}: wrote a report of {", ".join(replaced)} alone')
  return results


def opening_line(config, workdir: str, names, seeds=()) -> str:
  """`run`'s first line: what it trains, on what data and devices, where its results go."""
  m = config.model
  model = m.name_or_path or (f'a {m.scratch.family} from scratch ({m.scratch.num_layers} layers, '
                             f'd_model {m.scratch.d_model})')
  devices = jax.devices()
  return (f'run: {config.data.source} data, {model}, {len(devices)} {devices[0].platform} device'
          f'{"s" if len(devices) > 1 else ""}; models {", ".join(names)}; '
          + (f'seeds {", ".join(map(str, seeds))} (the whole experiment per seed); ' if len(seeds) > 1 else '')
          + f'workdir {workdir} '
          '(phases already finished there are kept)')


def write_seeds(first_ctx, per_seed: dict, order=(), extra=None) -> dict:
  """Combines the seeds' results (eval/seed_report.py) and writes the report to the run's workdir
  (process 0); `extra`: entries added to results.json as they are (the pretrained backbone's)."""
  results = {**seed_report.combine(per_seed), **(extra or {})}
  if distributed.is_primary():
    report.write_report(first_ctx.workdir, results, order=order)
  return results


def backbone_entry(config, record=None) -> dict:
  """results.json's 'backbone' entry (config.pretrain): where it is and what it cost, apart;
  `record` as backbone.ensure returned it, else the cached one's (read, never trained)."""
  record = record or (backbone.recorded(config) if config.pretrain.enabled else None)
  if record is None:
    return {}
  keep = ('path', 'fingerprint', 'time_s', 'train_time_s', 'steps', 'best_valid', 'samples', 'population', 'reused')
  return {'backbone': {k: record.get(k) for k in keep}}


def run_experiment(config, workdir, *, callbacks=(), restart=()):
  """The whole experiment on `workdir`; `callbacks` see every training phase (train/callbacks.py);
  `restart` (--restart: 'changed', 'all' or phase names) trains those phases again (resume.py)."""
  start = time.perf_counter()
  rows = runner.rows(config)  # checks the method and sweep lists before any work
  seeds = config_lib.experiment_seeds(config)
  pretrained = backbone.resolve(config, say=True)  # config.pretrain: before the data (its tokenizer)
  if distributed.is_primary():
    print(opening_line(config, workdir, [ORIGINAL, llmrec.RETRAIN] + [row.name for row in rows], seeds))
  config.seed = seeds[0]
  first = resume.prepare_run(config, workdir, 'run', restart)
  relearn.check_samples(config, first.data, seeds[0])  # config.eval.relearn: refused before any training
  if len(seeds) == 1:
    names = train_seed(first, rows, callbacks)
    write_results(first, names, order=spec.report_order(), extra=backbone_entry(config, pretrained))
  else:
    setups = {seed: seed_setup(first, seed) for seed in seeds[1:]}
    for seed, setup in setups.items():  # every seed checked (refused or restarted) before any training
      resume.check_seed(*setup, restart)
      relearn.check_samples(setup[0], setup[2], seed)
    per_seed = {}
    for i, seed in enumerate(seeds):
      ctx = first if i == 0 else seed_context(first, seed, setups[seed])
      names = train_seed(ctx, seed_rows(config, rows, i == 0), callbacks)
      per_seed[seed] = write_results(ctx, names, order=spec.report_order(), write=False)
      if distributed.is_primary():
        print(f'seed {seed} done ({i + 1} of {len(seeds)}) after {time.perf_counter() - start:.0f}s', flush=True)
    write_seeds(first, per_seed, order=spec.report_order(), extra=backbone_entry(config, pretrained))
  if not distributed.is_primary():  # process 0 wrote the report
    return
  print(storage.read_text(os.path.join(first.workdir, 'results.md')))
  print(f'run finished in {time.perf_counter() - start:.0f}s; results in {first.workdir}/results.json')

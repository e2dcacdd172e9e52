"""`run`: prepare -> original -> retrain -> augment -> every unlearning method -> evaluate -> report.

Each phase is skipped when its result is already in the workdir, so rerunning the same
command after an interruption resumes where it stopped; a phase trained with other settings
is refused before any work unless `restart` asks to train it again (resume.py).
"""
import os
import time

from e2urec_jax import distributed, resume, storage
from e2urec_jax.eval.evaluate import write_results
from e2urec_jax.methods import llmrec, runner, spec
from e2urec_jax.train.paths import ORIGINAL


def opening_line(config, workdir: str, names) -> str:
  """`run`'s first line: what it trains, on what data and devices, where its results go."""
  import jax
  m = config.model
  model = m.name_or_path or (f'a {m.scratch.family} from scratch ({m.scratch.num_layers} layers, '
                             f'd_model {m.scratch.d_model})')
  devices = jax.devices()
  return (f'run: {config.data.source} data, {model}, {len(devices)} {devices[0].platform} device'
          f'{"s" if len(devices) > 1 else ""}; models {", ".join(names)}; workdir {workdir} '
          '(phases already finished there are kept)')


def run_experiment(config, workdir, *, callbacks=(), restart=()):
  """The whole experiment on `workdir`; `callbacks` see every training phase (train/callbacks.py);
  `restart` (--restart: 'changed', 'all' or phase names) trains those phases again (resume.py)."""
  start = time.perf_counter()
  rows = runner.rows(config)  # checks the method and sweep lists before any work
  if distributed.is_primary():
    print(opening_line(config, workdir, [ORIGINAL, llmrec.RETRAIN] + [row.name for row in rows]))
  ctx = resume.prepare_run(config, workdir, 'run', restart)
  llmrec.ensure_original(ctx, callbacks)
  llmrec.ensure_retrain(ctx, callbacks=callbacks)
  if config.eval.noise_floor:
    llmrec.ensure_retrain(ctx, noise_floor=True, callbacks=callbacks)
  for row in rows:
    runner.run_row(ctx, row, callbacks)
  names = [ORIGINAL, llmrec.RETRAIN] + [row.name for row in rows]
  write_results(ctx, names, order=spec.report_order())
  if not distributed.is_primary():  # process 0 wrote the report
    return
  print(storage.read_text(os.path.join(ctx.workdir, 'results.md')))
  print(f'run finished in {time.perf_counter() - start:.0f}s; results in {ctx.workdir}/results.json')

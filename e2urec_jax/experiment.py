"""`run`: prepare -> original -> retrain -> augment -> every unlearning method -> evaluate -> report.

Each phase is skipped when its result is already in the workdir, so rerunning the same
command after an interruption resumes where it stopped.
"""
import os
import time

from e2urec_jax import distributed
from e2urec_jax.eval.evaluate import write_results
from e2urec_jax.methods import registry
from e2urec_jax.methods.original import ensure_original
from e2urec_jax.methods.retrain import ensure_retrain
from e2urec_jax.train.context import get_context


def run_experiment(config, workdir):
  start = time.perf_counter()
  rows = registry.rows(config)  # validates the method and sweep lists before any work
  ctx = get_context(config, workdir)
  ensure_original(ctx)
  ensure_retrain(ctx)
  if config.eval.noise_floor:
    ensure_retrain(ctx, noise_floor=True)
  for row, method, overrides in rows:
    registry.run_row(ctx, row, method, overrides)
  names = ['original', 'retrain'] + [r for r, _, _ in rows]
  write_results(ctx, names)
  if not distributed.is_primary():  # process 0 wrote the report
    return
  print(open(os.path.join(ctx.workdir, 'results.md')).read())
  print(f'run finished in {time.perf_counter() - start:.0f}s; results in {ctx.workdir}/results.json')

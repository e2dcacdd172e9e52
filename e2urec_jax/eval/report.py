"""The experiment's report: results.json (schema in docs/RESULTS_SCHEMA.md), results.md, plots.

The JSON is the record other tools read, so it is validated (`validate_results`) and
made strict (`plain`). The pieces: eval/report_schema.py (keys, check, strict JSON, the seeds'
mean row, how a row's values are read), eval/report_markdown.py (results.md),
eval/report_plots.py (the figures); this module writes them.
"""
import os

from e2urec_jax import runtime, storage
from e2urec_jax.eval import report_plots
from e2urec_jax.eval.report_markdown import markdown_report
# What callers read of the schema, from here as before.
from e2urec_jax.eval.report_schema import (FORGET_KEYS, MIA_KEYS, aggregate_seeds, env_info,  # noqa: F401
                                           ordered_methods, plain, validate_results)


def write_text(path: str, text: str) -> None:
  """A text file written whole (storage.write_bytes: temp file + rename, or one object write)."""
  storage.write_bytes(path, text.encode())


def write_report(workdir, results, order=()):
  """Writes results.json, results.md, distance_vs_time.png, test_auc.png (trajectories.png, relearn.png
  where measured); returns their paths.

  Every file is written to a temporary name and renamed, so a crash never leaves a
  half-written report. Missing methods are skipped; nothing is required beyond a
  `methods` dict, so a partial run can still be reported (check `validate_results`).
  """
  storage.makedirs(workdir)
  clean = plain(results)
  paths = {name: os.path.join(workdir, name) for name in
           ('results.json', 'results.md', 'distance_vs_time.png', 'test_auc.png')}
  runtime.write_json(paths['results.json'], clean)
  write_text(paths['results.md'], markdown_report(clean, order))
  plots = [('distance_vs_time.png', report_plots.plot_distance_vs_time), ('test_auc.png', report_plots.plot_test_auc)]
  if clean.get('trajectories'):
    from e2urec_jax.eval import seed_report
    paths['trajectories.png'] = os.path.join(workdir, 'trajectories.png')
    plots.append(('trajectories.png', seed_report.plot_trajectories))
  if clean.get('relearn'):  # config.eval.relearn (eval/relearn.py)
    from e2urec_jax.eval import relearn_report
    paths['relearn.png'] = os.path.join(workdir, 'relearn.png')
    plots.append(('relearn.png', relearn_report.plot))
  for name, plot in plots:
    report_plots.write_png(paths[name], plot(clean, order))
  return paths

"""The experiment's report: results.json (schema in docs/RESULTS_SCHEMA.md), results.md, plots.

The JSON is the record other tools read, so it is validated (`validate_results`) and
made strict (`plain`). The pieces: eval/report_schema.py (keys, check, strict JSON, the seeds'
mean row, how a row's values are read), eval/report_markdown.py (results.md),
eval/report_plots.py (the figures); this module writes them.
"""
import os

import json

from e2urec_jax import runtime, storage
from e2urec_jax.eval import relearn_report, report_files, report_plots, seed_report
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

  They are published together (eval/report_files.py): a crash leaves the previous report or this
  one, whole, never a mix. Missing methods are skipped; nothing is required beyond a `methods`
  dict, so a partial run can still be reported (check `validate_results`).
  """
  storage.makedirs(workdir)
  clean = plain(results)
  files = {'results.json': json.dumps(clean, indent=2, default=runtime.json_default).encode(),
           'results.md': markdown_report(clean, order).encode()}
  plots = [('distance_vs_time.png', report_plots.plot_distance_vs_time), ('test_auc.png', report_plots.plot_test_auc)]
  if clean.get('trajectories'):
    plots.append(('trajectories.png', seed_report.plot_trajectories))
  if clean.get('relearn'):  # config.eval.relearn (eval/relearn.py)
    plots.append(('relearn.png', relearn_report.plot))
  for name, plot in plots:
    files[name] = report_plots.png_bytes(plot(clean, order))
  report_files.publish(workdir, files)
  return {name: os.path.join(workdir, name) for name in files}

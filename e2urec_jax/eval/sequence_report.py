"""The report of `sequence` (e2urec_jax/sequence.py): sequence.json, sequence.md (the per-request
table, the drift of E2URec's distance to retrain, the cost of serving the chain) and sequence.png
(one panel per quantity against the request index), and the mean ± std over several runs.
"""
import os

import numpy as np

from e2urec_jax import runtime
from e2urec_jax.eval.report import write_text
from e2urec_jax.eval.report_plots import write_png
from e2urec_jax.eval.report_schema import plain
from e2urec_jax.train import registry

PLOTTED = (('forget JSD to retrain', ('forget', 'jsd')), ('test AUC', ('test', 'auc')),
           ('MIA AUC (loss attack)', ('mia', 'loss')), ('cumulative time (s)', ('cumulative_time_s',)))


def _value(row, path):
  for key in path:
    row = row.get(key) if isinstance(row, dict) else None
  return float(row) if isinstance(row, (int, float)) and not isinstance(row, bool) and np.isfinite(row) else None


def _fmt(v, digits=4):
  return '–' if v is None else f'{v:.{digits}f}'


def markdown(out: dict) -> str:
  s = out['sequence']
  lines = ['# Sequential deletion requests', '',
           f"{s['requests']} requests of {s['users_per_request']} users each (sequence.fraction={s['fraction']:g} of "
           f"the train users, forget selection '{s['forget_selection']}', seed {s['seed']}), served one after another "
           f"by {', '.join(s['methods'])}; retrained without every user requested so far after requests "
           f"{', '.join(map(str, s['retrained_after']))}. Forget set at request k: the train samples of every user "
           'requested up to k. `retrain` is retraining from scratch at each of those requests; its time is the '
           'retrains so far. MIA: the loss attack (the suite is in sequence.json); retrain\'s value is the target.', '',
           '| request | method | forget JSD | forget symKL | forget AUC | test AUC | MIA AUC (retrain) | '
           'fairness gap | cumulative time (s) |', '|---|---|---|---|---|---|---|---|---|']
  for step in out['steps']:
    target = _value(step['methods'].get('retrain', {}), ('mia', 'loss'))
    for name, row in step['methods'].items():
      mia_cell = _fmt(_value(row, ('mia', 'loss')))
      if target is not None and name != 'retrain' and mia_cell != '–':
        mia_cell += f' ({target:.4f})'
      lines.append(f"| {step['request']} | `{name}` | {_fmt(_value(row, ('forget', 'jsd')), 5)} | "
                   f"{_fmt(_value(row, ('forget', 'sym_kl')), 5)} | {_fmt(_value(row, ('forget', 'auc')))} | "
                   f"{_fmt(_value(row, ('test', 'auc')))} | {mia_cell} | {_fmt(_value(row, ('fairness', 'gap')))} | "
                   f"{_fmt(_value(row, ('cumulative_time_s',)), 1)} |")
  lines += ['', drift_note(out), '', '## Serving the chain', '']
  for m, c in out['chain'].items():
    sizes = ', '.join(f'{b / 1024:.0f} KB' for b in c['result_bytes_per_request'])
    if c['adapters']:
      lines.append(f"- `{m}`: each request adds adapters ({sizes}); they are merged into their base before the next "
                   f"request, so the served model is one full model ({c['served_model_bytes'] / 1024:.0f} KB) with no adapter "
                   'in its forward pass. Stacked instead, the chain would keep '
                   f"{c['stacked_adapter_bytes'] / 1024:.0f} KB of adapters and run {len(sizes.split(','))} adapter "
                   'pairs in every adapted layer; the merged copy costs one full model of disk per request.')
      lat = c.get('latency')
      if lat:
        lines.append(f"  Measured on {lat['rows']} test rows: {lat['merged_ms_per_row']:.3f} ms a row merged, "
                     f"{lat['stacked_ms_per_row']:.3f} ms stacked (rank {lat['stacked_rank']}); their logits differ "
                     f"by at most {lat['max_abs_logit_difference']:.2g} (the same model).")
    else:
      lines.append(f'- `{m}`: every request writes a full model ({sizes}); the served model is the last one.')
  lines += ['', f"Sequence time: {out['time_s']:.0f} s (training, retraining and scoring)."]
  return '\n'.join(lines) + '\n'


def drift_note(out: dict) -> str:
  """Whether the featured method's (MethodSpec.featured: E2URec's) distance to retrain drifts over the
  chain: first vs last retrained request."""
  featured = registry.featured()
  if featured is None:
    return 'Drift: no featured method (MethodSpec.featured); nothing to compare.'
  points = [(s['request'], _value(s['methods'].get(featured, {}), ('forget', 'jsd'))) for s in out['steps']
            if s['retrained']]
  points = [(k, v) for k, v in points if v is not None]
  if len(points) < 2:
    return f'Drift: fewer than two retrained requests with a {featured} row; nothing to compare.'
  (k0, v0), (k1, v1) = points[0], points[-1]
  return (f'Drift: {featured}\'s forget JSD to retrain is {v0:.5f} after request {k0} and {v1:.5f} after request {k1} '
          f'({v1 - v0:+.5f}, {100 * (v1 - v0) / v0:+.0f}%).' if v0 else
          f'Drift: {featured}\'s forget JSD to retrain goes from {v0:.5f} (request {k0}) to {v1:.5f} (request {k1}).')


def plot(out: dict):
  """One panel per quantity of PLOTTED against the request index, a line per method."""
  from matplotlib.figure import Figure  # heavy: matplotlib
  fig = Figure(figsize=(10, 7), dpi=110, layout='constrained')
  axes = fig.subplots(2, 2).reshape(-1)
  names = list(dict.fromkeys(n for s in out['steps'] for n in s['methods']))
  for ax, (title, path) in zip(axes, PLOTTED):
    for name in names:
      xs = [s['request'] for s in out['steps'] if name in s['methods']]
      ys = [_value(s['methods'][name], path) for s in out['steps'] if name in s['methods']]
      pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
      if pts:
        style = {'color': 'tab:red'} if name == registry.featured() else {'color': 'gray', 'ls': ':'} if name == 'original' \
            else {'color': 'black', 'ls': '--'} if name == 'retrain' else {}
        ax.plot(*zip(*pts), marker='o', label=name, **{'ls': '-', **style})
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('request')
    ax.set_xticks([s['request'] for s in out['steps']])
  axes[0].legend(fontsize=8)
  return fig


def write_report(directory: str, out: dict) -> dict:
  """sequence.json, sequence.md, sequence.png under `directory` (each written whole, then renamed)."""
  os.makedirs(directory, exist_ok=True)
  clean = plain(out)
  paths = {n: os.path.join(directory, n) for n in ('sequence.json', 'sequence.md', 'sequence.png')}
  runtime.write_json(paths['sequence.json'], clean)
  write_text(paths['sequence.md'], markdown(clean))
  write_png(paths['sequence.png'], plot(clean))
  return paths


# ------------------------------------------------------------------ several seeds
def summarize(outs: list[dict]) -> str:
  """Mean ± std over runs (seeds) of the per-request table: forget JSD, test AUC, MIA (loss) and cumulative time."""
  def cell(values, digits):
    values = [v for v in values if v is not None]
    if not values:
      return '–'
    text = f'{np.mean(values):.{digits}f}'
    return text + (f' ± {np.std(values, ddof=1):.{digits}f}' if len(values) > 1 else '')
  lines = [f'# Sequential deletion requests: mean ± std over {len(outs)} runs (seeds '
           f"{', '.join(str(o['sequence']['seed']) for o in outs)})", '',
           '| request | method | forget JSD | test AUC | MIA AUC (loss) | cumulative time (s) |', '|---|---|---|---|---|---|']
  for i, step in enumerate(outs[0]['steps']):
    for name in step['methods']:
      rows = [o['steps'][i]['methods'].get(name, {}) for o in outs]
      lines.append(f"| {step['request']} | `{name}` | {cell([_value(r, ('forget', 'jsd')) for r in rows], 5)} | "
                   f"{cell([_value(r, ('test', 'auc')) for r in rows], 4)} | "
                   f"{cell([_value(r, ('mia', 'loss')) for r in rows], 4)} | "
                   f"{cell([_value(r, ('cumulative_time_s',)) for r in rows], 1)} |")
  return '\n'.join(lines) + '\n'

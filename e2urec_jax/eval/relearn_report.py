"""The relearning check's report (eval/relearn.py): its summary over seeds, its results.md section and
relearn.png.

Per (method, setting, k): mean ± std over seeds of the copy's symKL to the original's forget
predictions, to retrain's, its forget AUC and its recovery (how much closer to the original the
fine-tuning brought it); and two paired comparisons (eval/stats.py) with the retrained model after
the same steps on the same seed: of the recovery (> 0: the method gives back more than a model that
never saw the users) and of the symKL to the original (< 0: it ends closer to the original).
"""
import math

import numpy as np

from e2urec_jax.eval import report_schema as schema
from e2urec_jax.eval import stats
from e2urec_jax.train import registry

RETRAIN, ORIGINAL = 'retrain', 'original'
MEASURES = ('sym_kl_original', 'sym_kl_retrain', 'forget_auc', 'recovery')


def _by_seed(entry: dict, path) -> dict:
  """{seed: value} of one row's cell over its seeds (a one-seed row: its own)."""
  rows = entry.get('seeds') or [entry]
  found = {row.get('seed'): schema.lookup(row, path) for row in rows}
  return {seed: float(v) for seed, v in found.items() if v is not None}


def _ks(points: dict) -> list[str]:
  return sorted(points, key=int)


def summary(methods: dict) -> dict:
  """{name: {setting: {k: {measure: mean_std, 'recovery_vs_retrain', 'distance_vs_retrain': paired
  comparisons}}}} of every row with 'relearn'."""
  out = {}
  reference = methods.get(RETRAIN) or {}
  for name, entry in methods.items():
    relearn = entry.get('relearn') if isinstance(entry, dict) else None
    if not isinstance(relearn, dict):
      continue
    for setting, points in relearn.items():
      for k in _ks(points):
        cell = {m: stats.mean_std(_by_seed(entry, ('relearn', setting, k, m)).values()) for m in MEASURES}
        if name != RETRAIN and reference:
          for key, measure in (('recovery_vs_retrain', 'recovery'), ('distance_vs_retrain', 'sym_kl_original')):
            mine = _by_seed(entry, ('relearn', setting, k, measure))
            theirs = _by_seed(reference, ('relearn', setting, k, measure))
            common = [s for s in mine if s in theirs]
            cell[key] = stats.paired_comparison([mine[s] for s in common], [theirs[s] for s in common])
        out.setdefault(name, {}).setdefault(setting, {})[k] = cell
  return out


def _fmt(x, digits=4):
  return '–' if x is None or not math.isfinite(float(x)) else f'{float(x):.{digits}g}'


def _ms(m, digits=4):
  if not m or m.get('n', 0) == 0:
    return '–'
  return _fmt(m['mean'], digits) + (f' ± {_fmt(m["std"], 2)}' if m['n'] > 1 else '')


def _paired(c):
  if not c or c.get('n', 0) == 0:
    return '–'
  return f'{_fmt(c["mean_diff"], 3)}' + (f' [{_fmt(c["ci_low"], 3)}, {_fmt(c["ci_high"], 3)}]' if c['n'] > 1 else '')


def markdown_section(results: dict, order=()) -> list[str]:
  """results.md's relearning section (none when the run did not measure it)."""
  info, s = results.get('relearn'), (results.get('summary') or {}).get('relearn')
  if not info or not s:
    return []
  recipe = info.get('recipe') or {}
  out = ['', '## Does forgetting stick? (relearning)', '',
         f"A copy of every model, {recipe.get('weights', 'every weight it serves')}, fine-tuned for k steps "
         f"(AdamW, rate {recipe.get('learning_rate', '?')}, batch {recipe.get('batch_size', '?')}, the same batches "
         f"for every model) on `forget`: {info.get('relearned_samples', '?')} forget samples, or `retain`: "
         f"{info.get('retain_samples', '?')} retained samples; then scored on the other "
         f"{info.get('measured_samples', '?')} forget samples (first seed's counts). symKL to original / retrain: "
         'to their forget predictions (first answer position). Recovery: the symKL to the original before minus '
         'after (> 0: fine-tuning moved the model towards the original). A model that never saw the users moves '
         'too, so each is read against the retrained model after the same k steps on the same batches, paired '
         'over seeds (mean difference, 95% t-interval): recovery − retrain\'s (> 0: gives back more than '
         'retraining would) and symKL to original − retrain\'s (< 0: ends closer to the original); closer: seeds '
         'where it ends closer. k = 0: the model as published. Mean ± std over seeds.', '',
         '| method | setting | k | symKL to original | symKL to retrain | forget AUC | recovery | '
         'recovery − retrain\'s | symKL to original − retrain\'s | closer |', '|' + '---|' * 10]
  for name in schema.ordered_methods(list(s), order):
    for i, (setting, points) in enumerate(s[name].items()):
      for k in _ks(points):
        if k == '0' and i > 0:  # the model as published: the same in every setting
          continue
        cell = points[k]
        distance = cell.get('distance_vs_retrain')
        closer = f'{distance["wins"]}/{distance["n"]}' if distance and distance.get('n') else '–'
        recovery = ('–', '–') if k == '0' else (_ms(cell['recovery']), _paired(cell.get('recovery_vs_retrain')))
        out.append(f'| `{name}` | {"–" if k == "0" else setting} | {k} | {_ms(cell["sym_kl_original"])} | '
                   f'{_ms(cell["sym_kl_retrain"])} | {_ms(cell["forget_auc"])} | {recovery[0]} | {recovery[1]} | '
                   f'{_paired(distance)} | {closer} |')
  return out


PALETTE = ('tab:blue', 'tab:orange', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray')


def plot(results: dict, order=()):
  """relearn.png: symKL to the original's forget predictions against k, a line per model (mean over
  seeds), a panel per setting."""
  from matplotlib.figure import Figure  # heavy: matplotlib
  s = (results.get('summary') or {}).get('relearn') or {}
  settings = [x for x in (results.get('relearn') or {}).get('settings', []) if any(x in v for v in s.values())]
  fig = Figure(figsize=(5.5 * max(1, len(settings)), 4.5), dpi=110, layout='constrained')
  axes = np.atleast_1d(fig.subplots(1, max(1, len(settings))))
  if not settings:
    axes[0].text(0.5, 0.5, 'no relearning measured', ha='center', transform=axes[0].transAxes)
    return fig
  palette = iter(PALETTE * 4)
  colors = {}
  for name in schema.ordered_methods(list(s), order):
    colors[name] = ('black' if name == RETRAIN else 'gray' if name == ORIGINAL
                    else 'tab:red' if registry.is_featured_row(name) else next(palette))
  for ax, setting in zip(axes, settings):
    for name in schema.ordered_methods(list(s), order):
      points = s[name].get(setting) or {}
      ks = _ks(points)
      ys = [points[k]['sym_kl_original']['mean'] for k in ks]
      seeds = points[ks[0]]['sym_kl_original']['n'] if ks else 0
      style = '--' if name == RETRAIN else ':' if name == ORIGINAL else '-'
      ax.plot([int(k) for k in ks], ys, style, marker='o', ms=3, color=colors[name], lw=2 if name == RETRAIN else 1.5,
              label=f'{name} ({seeds} seed{"s" * (seeds != 1)})')
    ax.set(xlabel='fine-tuning steps k', ylabel='forget symKL to the original (linear below 0.1, log above)',
           title=f'Relearning on {setting} samples')
    ax.set_yscale('symlog', linthresh=0.1)  # over-forgetting methods start decades above the others
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc='best')
  return fig

"""The report of a run over several seeds of the whole experiment (config.seeds).

Per method: the mean row (numeric leaves averaged) with every seed's own row kept under
'seeds' (each with its 'seed'); the noise floor likewise. `summary` holds what the claims
are judged on: for E2URec against every other method seen on two or more seeds, the paired
comparison of the forget distance to retrain (symKL and JSD; eval/stats.py), E2URec's test
AUC against the original's, the share of the original's distance above the noise floor each
method closed, each method's whole cost over retraining's, and, where trajectories were
recorded, how close a retrain-free stopping rule lands to the retrain-optimal step.
"""
import math

import numpy as np

from e2urec_jax.eval import relearn_report, report_schema as schema, stats
from e2urec_jax.train import registry

ORIGINAL, RETRAIN = 'original', 'retrain'
DISTANCES = ('sym_kl', 'jsd')
COLLATERAL_MEASURES = ('sym_kl', 'auc')  # paired over seeds on each collateral group (eval/collateral.py)


def combine(per_seed: dict) -> dict:
  """One results dict from {seed: the results of that seed} (evaluate.write_results(write=False))."""
  seeds = list(per_seed)
  names = []
  for seed in seeds:
    names += [n for n in per_seed[seed]['methods'] if n not in names]
  methods = {}
  for name in names:
    entries = [dict(per_seed[s]['methods'][name], seed=int(s)) for s in seeds if name in per_seed[s]['methods']]
    methods[name] = schema.aggregate_seeds(entries) if len(entries) > 1 else entries[0]
    if len(entries) > 1:
      del methods[name]['seed']  # each seed's row keeps its own
  floors = [dict(per_seed[s]['noise_floor'], seed=int(s)) for s in seeds if per_seed[s].get('noise_floor')]
  floor = None
  if floors:
    floor = {k: float(np.mean([f[k] for f in floors])) for k in floors[0] if k != 'seed'}
    floor['seeds'] = floors
  trajectories = {}
  for seed in seeds:
    trajectories.update(per_seed[seed].get('trajectories') or {})
  first = per_seed[seeds[0]]
  results = {'seeds': [int(s) for s in seeds], 'methods': methods, 'noise_floor': floor,
             'trajectories': trajectories, 'config': first['config'], 'env': first['env']}
  for key in ('mia', 'fairness', 'ranking', 'forget_set', 'forget_unit', 'collateral', 'relearn'):  # the first seed's (counts differ per seed)
    if key in first:
      results[key] = first[key]
  results['summary'] = summary(results)
  return results


def per_seed_values(entry: dict, path) -> dict:
  """{seed: value} of one method's cell (a one-seed row: its own seed, or None)."""
  rows = entry.get('seeds') or [entry]
  out = {}
  for row in rows:
    value = row
    for key in path:
      value = value.get(key) if isinstance(value, dict) else None
    if schema.is_number(value) and math.isfinite(float(value)):
      out[row.get('seed')] = float(value)
  return out


def _paired(methods, a: str, b: str, path) -> dict:
  va, vb = per_seed_values(methods[a], path), per_seed_values(methods[b], path)
  common = [s for s in va if s in vb]
  return stats.paired_comparison([va[s] for s in common], [vb[s] for s in common])


def _mean(entry, path) -> float:
  values = schema.cell_values(entry, path)  # each seed's finite value (or the row's own)
  return float(np.mean(values)) if values else float('nan')


def summary(results: dict) -> dict:
  """What the claims are judged on (see the module docstring); means are over each method's seeds."""
  methods = results.get('methods') or {}
  floor = results.get('noise_floor') or {}
  out = {'comparisons': {}, 'gap_closed': {}, 'time_ratio': {}, 'time_ratio_no_compile': {},
         'selection': selection(results)}
  featured = registry.featured()  # the method the claims are about (MethodSpec.featured)
  if featured in methods:
    for name in methods:
      if name in (featured, RETRAIN) or len(per_seed_values(methods[name], ('forget', 'sym_kl'))) < 2:
        continue
      out['comparisons'][name] = {d: _paired(methods, featured, name, ('forget', d)) for d in DISTANCES}
      if 'collateral' in methods[name]:
        out.setdefault('collateral_comparisons', {})[name] = {
            f'{g}_{k}': _paired(methods, featured, name, ('collateral', g, k))
            for g in schema.COLLATERAL_GROUPS for k in COLLATERAL_MEASURES}
    if ORIGINAL in methods:
      out['test_auc_vs_original'] = _paired(methods, featured, ORIGINAL, ('test', 'auc'))
  if RETRAIN in methods:
    retrain_s = _mean(methods[RETRAIN], ('time_s',))
    retrain_compile_s = _mean(methods[RETRAIN], ('compile_s',))
  for name in methods:
    if name in (ORIGINAL, RETRAIN):
      continue
    if ORIGINAL in methods:
      out['gap_closed'][name] = {d: stats.gap_closed(_mean(methods[ORIGINAL], ('forget', d)),
                                                      _mean(methods[name], ('forget', d)),
                                                      float(floor.get(d, float('nan'))) if floor else float('nan'))
                                 for d in DISTANCES}
    if RETRAIN in methods:
      time_s = _mean(methods[name], ('time_s',))
      out['time_ratio'][name] = time_s / retrain_s
      # Compilation is paid once per process and step shape: retraining here reuses the original's
      # compiled step (none to pay), a method compiles its own on the first seed. Without it, the
      # cost of one more request on a warm process.
      out['time_ratio_no_compile'][name] = ((time_s - _mean(methods[name], ('compile_s',)))
                                            / (retrain_s - retrain_compile_s))
  if any(isinstance(e, dict) and e.get('relearn') for e in methods.values()):  # config.eval.relearn
    out['relearn'] = relearn_report.summary(methods)
  return out


# ------------------------------------------------------------------ choosing without the retrained model
AUTO_TARGET = 0.5  # a model that never saw the forget samples cannot tell them from their users' later ones


def auto_step(points) -> dict:
  """The retrain-free choice over one trajectory: the point whose held-out MIA AUC (forget samples
  against the same users' unseen valid samples) is closest to 0.5, the earliest on ties."""
  scored = [p for p in points if schema.is_number(p.get('heldout_mia_auc'))
            and math.isfinite(float(p['heldout_mia_auc']))]
  if not scored:
    return {}
  return min(scored, key=lambda p: (abs(float(p['heldout_mia_auc']) - AUTO_TARGET), p['step']))


def selection(results: dict) -> dict:
  """Per method, over seeds: symKL at the last step, at the retrain-optimal step (which needs the
  retrained model) and at the retrain-free choice (`auto_step`), with the steps."""
  per_method = {}
  for seed, by_name in (results.get('trajectories') or {}).items():
    for name, points in by_name.items():
      if not points:
        continue
      best = min(points, key=lambda p: p['sym_kl'])
      auto = auto_step(points)
      per_method.setdefault(name, []).append(
          {'final': points[-1]['sym_kl'], 'best': best['sym_kl'], 'best_step': best['step'],
           'auto': auto.get('sym_kl', float('nan')), 'auto_step': auto.get('step', float('nan'))})
  return {name: {k: stats.mean_std([r[k] for r in rows]) for k in rows[0]} for name, rows in per_method.items()}


# ------------------------------------------------------------------ the report
def _fmt(x, digits=4):
  return '–' if x is None or not math.isfinite(float(x)) else f'{float(x):.{digits}g}'


def _ms(m):
  if not m or m.get('n', 0) == 0:
    return '–'
  return _fmt(m['mean']) + (f' ± {_fmt(m["std"], 2)}' if m['n'] > 1 else '')


def markdown_sections(results: dict) -> list[str]:
  """The seed sections of results.md: per-seed distances, the paired comparisons, gap closed and
  cost, the mechanism, the retrain-free choice."""
  methods, s = results.get('methods') or {}, results.get('summary') or {}
  seeds = results.get('seeds') or []
  out = []
  if len(seeds) > 1:
    out += ['', f'## Per seed (forget symKL to retrain; seeds {", ".join(map(str, seeds))})', '',
            '| method | ' + ' | '.join(map(str, seeds)) + ' |', '|---|' + '---|' * len(seeds)]
    for name, entry in methods.items():
      v = per_seed_values(entry, ('forget', 'sym_kl'))
      out.append(f'| `{name}` | ' + ' | '.join(_fmt(v.get(seed)) for seed in seeds) + ' |')
    floor = (results.get('noise_floor') or {}).get('seeds') or []
    if floor:
      fv = {f['seed']: f.get('sym_kl') for f in floor}
      out.append('| noise floor | ' + ' | '.join(_fmt(fv.get(seed)) for seed in seeds) + ' |')
  if s.get('comparisons'):
    out += ['', '## E2URec against each method, paired over seeds',
            '', 'Mean of (E2URec − method) per seed with its 95% t-interval; wins: seeds where E2URec is '
            'closer to the retrained model.', '',
            '| method | Δ symKL | 95% interval | Δ JSD | 95% interval | wins |', '|---|---|---|---|---|---|']
    for name, c in s['comparisons'].items():
      k, j = c['sym_kl'], c['jsd']
      out.append(f'| `{name}` | {_fmt(k["mean_diff"])} | [{_fmt(k["ci_low"])}, {_fmt(k["ci_high"])}] | '
                 f'{_fmt(j["mean_diff"])} | [{_fmt(j["ci_low"])}, {_fmt(j["ci_high"])}] | {k["wins"]}/{k["n"]} |')
    out += _collateral_comparisons(s.get('collateral_comparisons') or {})
    t = s.get('test_auc_vs_original')
    if t:
      out += ['', f'E2URec test AUC − original: {_fmt(t["mean_diff"])} '
              f'[{_fmt(t["ci_low"])}, {_fmt(t["ci_high"])}] over {t["n"]} seeds.']
  if s.get('gap_closed'):
    out += ['', '## Gap closed and cost', '',
            'Gap closed: (original − method) / (original − noise floor) of the mean distances '
            '(1 = as close as two retrains, 0 = no closer than the original). Cost: the method\'s '
            'whole time over retraining\'s; compile aside: both without compilation (paid once per process '
            'and step shape; retraining reuses the original\'s compiled step, a method compiles its own '
            'on the first seed).', '', '| method | gap closed (symKL) | gap closed (JSD) | '
            'time / retrain | compile aside |', '|---|---|---|---|---|']
    for name, g in s['gap_closed'].items():
      out.append(f'| `{name}` | {_fmt(g["sym_kl"], 3)} | {_fmt(g["jsd"], 3)} | '
                 f'{_fmt(s["time_ratio"].get(name), 3)} | '
                 f'{_fmt((s.get("time_ratio_no_compile") or {}).get(name), 3)} |')
  # Each method's diagnostic section, as its spec writes it (MethodSpec.diagnostic_report), over its rows.
  for spec in registry.specs():
    entries = {n: e['mechanism'] for n, e in methods.items()
               if isinstance(e, dict) and e.get('mechanism') and registry.method_of_row(n) is spec}
    if entries and spec.diagnostic_report is not None:
      out += spec.diagnostic_report(entries)
  if s.get('selection'):
    out += ['', '## Where each method was closest, and a retrain-free choice', '',
            'symKL to retrain at the last step, at the closest recorded step (needs the retrained '
            'model) and at the step a retrain-free rule picks (held-out MIA AUC of the forget samples '
            'against their users\' unseen later samples closest to 0.5); mean ± std over seeds.', '',
            '| method | last | closest | at step | retrain-free | at step |', '|---|---|---|---|---|---|']
    for name, sel in s['selection'].items():
      out.append(f'| `{name}` | {_ms(sel["final"])} | {_ms(sel["best"])} | {_ms(sel["best_step"])} | '
                 f'{_ms(sel["auto"])} | {_ms(sel["auto_step"])} |')
  return out


def _collateral_comparisons(found: dict) -> list[str]:
  """The paired table of the forget users' other samples (eval/collateral.py), where measured."""
  if not found:
    return []
  out = ['', '### The same, on the forget users\' other samples (collateral)', '',
         'Mean of (E2URec − method) per seed with its 95% t-interval: symKL to retrain and AUC on the users\' '
         'retained train samples and on their test samples. symKL wins: seeds where E2URec is closer to the '
         'retrained model.', '',
         '| method | Δ retained symKL | 95% interval | wins | Δ retained AUC | 95% interval | Δ test symKL | '
         '95% interval | wins | Δ test AUC | 95% interval |', '|---|---|---|---|---|---|---|---|---|---|---|']
  for name, c in found.items():
    cells = []
    for group in schema.COLLATERAL_GROUPS:
      k, a = c[f'{group}_sym_kl'], c[f'{group}_auc']
      cells += [_fmt(k['mean_diff']), f'[{_fmt(k["ci_low"])}, {_fmt(k["ci_high"])}]', f'{k["wins"]}/{k["n"]}',
                _fmt(a['mean_diff']), f'[{_fmt(a["ci_low"])}, {_fmt(a["ci_high"])}]']
    out.append(f'| `{name}` | ' + ' | '.join(cells) + ' |')
  return out


PALETTE = ('tab:blue', 'tab:orange', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray')


def plot_trajectories(results: dict, order=()):
  """Distance to retrain (symKL) and forget AUC against step, one line per method (mean over
  seeds, each seed faint), the noise floor as a band and retrain's forget AUC as a line."""
  from matplotlib.figure import Figure  # heavy: matplotlib
  fig = Figure(figsize=(11, 4.5), dpi=110, layout='constrained')
  ax_d, ax_a = fig.subplots(1, 2)
  methods = results.get('methods') or {}
  by_name = {}
  for by_method in (results.get('trajectories') or {}).values():
    for name, points in by_method.items():
      by_name.setdefault(name, []).append(points)
  palette = iter(PALETTE * 4)  # red is the featured method's (MethodSpec.featured), green the noise floor's
  for name in schema.ordered_methods(list(by_name), order):
    color = 'tab:red' if name == registry.featured() else next(palette)
    runs = by_name[name]
    for points in runs:
      for ax, key in ((ax_d, 'sym_kl'), (ax_a, 'forget_auc')):
        ax.plot([p['step'] for p in points], [p.get(key, np.nan) for p in points], color=color, alpha=0.25, lw=0.8)
    steps = sorted(set.intersection(*[{p['step'] for p in points} for points in runs]))
    for ax, key in ((ax_d, 'sym_kl'), (ax_a, 'forget_auc')):
      mean = [np.mean([next(p.get(key, np.nan) for p in points if p['step'] == st) for points in runs]) for st in steps]
      ax.plot(steps, mean, color=color, lw=2, marker='o', ms=3, label=f'{name} ({len(runs)} seed{"s" * (len(runs) > 1)})')
  floor = results.get('noise_floor') or {}
  floors = [f['sym_kl'] for f in floor.get('seeds') or [floor] if schema.is_number(f.get('sym_kl'))]
  if floors:
    low, high = min(floors), max(floors)
    ax_d.axhspan(low, high if high > low else low * 1.02, color='green', alpha=0.2, label='noise floor (range over seeds)')
  for name, style in ((ORIGINAL, ':'), (RETRAIN, '-.')):
    if name in methods:
      value = _mean(methods[name], ('forget', 'sym_kl' if name == ORIGINAL else 'auc'))
      if math.isfinite(value):
        (ax_d if name == ORIGINAL else ax_a).axhline(value, color='gray', ls=style, lw=1,
                                                   label=f'{name}' + (' forget AUC' if name == RETRAIN else ''))
  ax_d.set(xlabel='step', ylabel='forget symKL to retrained model (log)', title='Distance to retrain while unlearning')
  ax_a.set(xlabel='step', ylabel='forget AUC', title='Forget AUC (below retrain\'s = overshoot)')
  ax_d.set_yscale('log')  # methods that diverge (NegGrad) sit decades above the others
  for ax in (ax_d, ax_a):
    if ax.lines:
      ax.legend(fontsize=7, loc='best')
  return fig

"""The first screen of a run: its headline table and the criteria the paper's story needs.

`python -m e2urec_jax table --workdir=DIR` prints both from DIR/results.json, so the README's
table is a command's output over a recorded file (docs/results/), not numbers copied by hand.
`--workdir=A,B` pools the seeds of several runs of the same experiment (`pool`): the table, the
criteria and E2URec's paired comparisons are then over every seed of A and B.

The criteria (every one over the seeds of the run, paired where two methods are compared):
- memorised: the original's mean symKL to retrain at least 3x the noise floor's (else there is
  little to unlearn, and "gap closed" is mostly noise);
- closest: E2URec's mean below Bad-T's and NegGrad's, the paired 95% interval excluding 0;
- test AUC: E2URec's within 0.01 of the original's (mean paired difference);
- gap closed: (original - E2URec) / (original - noise floor) of the mean symKL at least 0.5;
- cost: E2URec's whole cost under a third of retraining's.
"""
import math

import numpy as np

from e2urec_jax.errors import UserError
from e2urec_jax.eval.seed_report import combine, per_seed_values
from e2urec_jax.train import registry

# The README table's rows in order (a row the run lacks is left out) and the baselines the criteria compare with.
ROWS = (('original', 'original'), ('retrain', 'retrain (the reference)'), ('e2urec', 'E2URec'),
        ('oracle', 'oracle (E2URec\'s student, retrain as its forget target)'), ('badt', 'Bad-T'),
        ('neggrad', 'NegGrad'))
BASELINES = ('badt', 'neggrad')
FLOOR_RATIO, TEST_AUC_DROP, GAP_CLOSED, COST = 3.0, 0.01, 0.5, 1 / 3


def _stats(values: dict) -> tuple:
  v = np.array(list(values.values()), dtype=float)
  return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)) if len(v) else (math.nan, 0.0, 0)


def _cell(mean: float, std: float, n: int, digits: int = 3) -> str:
  if not math.isfinite(mean):
    return ''
  return f'{mean:.{digits}f} ± {std:.{digits}f}' if n > 1 else f'{mean:.{digits}f}'


def table(results: dict) -> str:
  """Markdown: each model's forget symKL to retrain, gap closed, test AUC and cost over retraining's."""
  methods, summary = results.get('methods', {}), results.get('summary', {})
  floor = results.get('noise_floor') or {}
  out = ['| model | seeds | forget symKL to retrain | gap closed | test AUC | whole cost / retraining |',
         '| --- | --- | --- | --- | --- | --- |']
  for name, label in ROWS:
    if name not in methods:
      continue
    kl = _stats(per_seed_values(methods[name], ('forget', 'sym_kl')))
    auc = _stats(per_seed_values(methods[name], ('test', 'auc')))
    gap = (summary.get('gap_closed', {}).get(name) or {}).get('sym_kl')
    cost = summary.get('time_ratio', {}).get(name)
    gap_cell = {'original': '0', 'retrain': ''}.get(name, _num(gap, 2))
    cells = [label, str(auc[2]), '0' if name == 'retrain' else _cell(*kl, digits=4), gap_cell, _cell(*auc),
             '1' if name == 'retrain' else _num(cost, 2)]
    out.append('| ' + ' | '.join(cells) + ' |')
  if floor:
    values = {s['seed']: s['sym_kl'] for s in floor.get('seeds', [])} or {None: floor['sym_kl']}
    out.append(f'| noise floor (two retrains) | {len(values)} | {_cell(*_stats(values), digits=4)} | 1 | | |')
  return '\n'.join(out)


def _num(value, digits: int) -> str:
  return f'{value:.{digits}f}' if isinstance(value, (int, float)) and math.isfinite(value) else ''


def criteria(results: dict) -> list[tuple[str, bool | None, str]]:
  """[(criterion, met (None: not measured), the numbers)] for E2URec, as the module docstring says."""
  methods, summary = results.get('methods', {}), results.get('summary', {})
  floor = (results.get('noise_floor') or {}).get('sym_kl')
  mean = lambda name: _stats(per_seed_values(methods.get(name, {}), ('forget', 'sym_kl')))[0]  # noqa: E731
  out = []
  original = mean('original')
  if floor:
    ratio = original / floor
    out.append(('original >= 3x the noise floor', ratio >= FLOOR_RATIO, f'{ratio:.1f}x ({original:.4g} / {floor:.4g})'))
  for other in BASELINES:
    c = summary.get('comparisons', {}).get(other, {}).get('sym_kl')
    if c:
      met = c['ci_high'] < 0
      out.append((f'E2URec closer than {other}, interval excluding 0', met,
                  f'{c["mean_diff"]:+.4g} [{c["ci_low"]:+.4g}, {c["ci_high"]:+.4g}], {c["wins"]} of {c["n"]} seeds'))
  t = summary.get('test_auc_vs_original')
  if t:
    interval = f' [{t["ci_low"]:+.4f}, {t["ci_high"]:+.4f}]' if t['ci_low'] is not None else ' (one seed: no interval)'
    out.append(('test AUC within 0.01 of the original', t['mean_diff'] >= -TEST_AUC_DROP,
                f'{t["mean_diff"]:+.4f}{interval}'))
  featured = registry.featured()  # the method the criteria are about (MethodSpec.featured: E2URec)
  gap = (summary.get('gap_closed', {}).get(featured) or {}).get('sym_kl')
  if gap is not None:
    oracle = (summary.get('gap_closed', {}).get('oracle') or {}).get('sym_kl')
    extra = f' (oracle {oracle:.2f})' if oracle is not None else ''
    out.append(('gap closed >= 0.5', gap >= GAP_CLOSED, f'{gap:.2f}{extra}'))
  cost = summary.get('time_ratio', {}).get(featured)
  if cost is not None:
    out.append(('whole cost under a third of retraining', cost < COST, f'{cost:.2f}'))
  return out


def criteria_lines(results: dict) -> str:
  marks = {True: 'met', False: 'NOT met', None: 'not measured'}
  return '\n'.join(f'- {name}: {marks[met]} ({numbers})' for name, met, numbers in criteria(results))


def comparison_lines(results: dict) -> str:
  """E2URec's paired comparisons of the forget symKL to retrain, one line per other method."""
  lines = []
  for name, c in (results.get('summary', {}).get('comparisons') or {}).items():
    c = c.get('sym_kl') or {}
    if c.get('n') and all(isinstance(c.get(k), (int, float)) for k in ('mean_diff', 'ci_low', 'ci_high')):
      lines.append(f'- E2URec - {name}: {c["mean_diff"]:+.4f} [{c["ci_low"]:+.4f}, {c["ci_high"]:+.4f}] '
                   f'(E2URec closer on {c["wins"]} of {c["n"]} seeds)')
  return '\n'.join(lines)


def _seed_rows(entry: dict):
  """(seed, row) of each seed a method's entry holds (a one-seed entry is its own row)."""
  for row in entry.get('seeds') or [entry]:
    yield row.get('seed'), {k: v for k, v in row.items() if k not in ('seed', 'seeds')}


def pool(runs: dict) -> dict:
  """One results dict over every seed of several runs ({label: results}), as if one run had trained
  them all: each seed's rows are regrouped and combined, and the summary recomputed. A seed found
  in two runs is refused (its rows would be counted twice), as is a run whose rows lack seeds."""
  per_seed, origin = {}, {}
  for label, results in runs.items():
    floors = {row.get('seed'): row for row in (results.get('noise_floor') or {}).get('seeds', [])}
    seeds = set()
    for name, entry in (results.get('methods') or {}).items():
      for seed, row in _seed_rows(entry):
        if seed is None:
          raise UserError(f'{label}: method {name} has a row without its seed; pool runs written by `run`')
        seeds.add(seed)
        per_seed.setdefault(seed, {'methods': {}, 'config': results.get('config'), 'env': results.get('env')})
        per_seed[seed]['methods'][name] = row
    for seed in seeds:
      if seed in origin:
        raise UserError(f'seed {seed} is in both {origin[seed]} and {label}: pool runs of different seeds')
      origin[seed] = label
      if seed in floors:
        per_seed[seed]['noise_floor'] = {k: v for k, v in floors[seed].items() if k != 'seed'}
  if not per_seed:
    raise UserError(f'no method rows in {", ".join(runs)}: nothing to pool')
  return combine({seed: per_seed[seed] for seed in sorted(per_seed)})

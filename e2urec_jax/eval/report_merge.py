"""`evaluate --model=X`: X's rows scored again and merged into the existing report, every other row kept.

A report is taken apart into what each seed scored (`split_seeds`: the shape evaluate.write_results
returns with write=False, one per seed), X's rows are replaced on the seeds just scored, and the
report is put together again as `run` would have (`assemble`: one seed as it is, several through
seed_report.combine), so the means over seeds, the fairness gap changes against the original and
the summary are computed again from the rows now in it.
"""
from e2urec_jax.eval import fairness, seed_report
from e2urec_jax.eval import report_schema as schema
from e2urec_jax.train import registry

RUN_KEYS = ('noise_floor', 'mia', 'fairness', 'ranking', 'forget_set', 'config', 'env')  # measured once per seed


def rows_scored_with(model: str, available: list[str]) -> list[str]:
  """The rows `evaluate --model=model` scores: the model, its repeats at other seeds ('m[seed=s]', folded
  into its row), and the rows whose diagnostic reports on each other's (MethodSpec.same_as: the oracle's
  distance sits in E2URec's mechanism), so no kept row holds a number of the model's old scores."""
  out = [model] + [n for n in available if n.startswith(model + '[seed=')]
  spec = registry.method_of_row(model)
  if spec is not None:
    related = {n for n in (spec.same_as, *[s.name for s in registry.specs() if s.same_as == spec.name]) if n}
    out += [n for n in available if n not in out and getattr(registry.method_of_row(n), 'name', None) in related]
  return out


def split_seeds(results: dict) -> dict:
  """{seed: that seed's results} of a report: the per-seed rows of a multi-seed report (each with its
  'seed'), or the rows of a one-seed report as they are."""
  seeds = [int(s) for s in results.get('seeds') or []] or [int(results['config']['seed'])]
  per = {s: {'methods': {}, 'trajectories': {}} for s in seeds}
  multi = len(seeds) > 1
  for name, row in results['methods'].items():
    entries = row.get('seeds') if multi and row.get('seeds') and 'seed' in row['seeds'][0] else [row]
    for entry in entries:
      seed = int(entry.get('seed', seeds[0])) if multi else seeds[0]
      per.setdefault(seed, {'methods': {}, 'trajectories': {}})
      per[seed]['methods'][name] = {k: v for k, v in entry.items() if not (multi and k == 'seed')}
  floor = results.get('noise_floor')
  for seed, part in per.items():
    for key in RUN_KEYS:
      if key in results:
        part[key] = results[key]
    part['noise_floor'] = floor
    found = (results.get('trajectories') or {}).get(str(seed))
    if found:
      part['trajectories'] = {str(seed): found}
  if multi and floor and floor.get('seeds'):
    for entry in floor['seeds']:
      if int(entry['seed']) in per:
        per[int(entry['seed'])]['noise_floor'] = {k: v for k, v in entry.items() if k != 'seed'}
  return per


def merge(old_per_seed: dict, new_per_seed: dict, replaced: list[str], order=()) -> dict:
  """{seed: results}: the old rows but `replaced` on the seeds scored anew, with those seeds' new
  rows and measurements; each seed's rows in the report's order, their fairness gap changes again."""
  per = {s: dict(part) for s, part in old_per_seed.items()}
  for seed, new in new_per_seed.items():
    old = per.get(seed, {'methods': {}, 'trajectories': {}})
    methods = {n: r for n, r in old['methods'].items() if n not in replaced}
    methods.update(new['methods'])
    trajectories = {n: p for n, p in ((old.get('trajectories') or {}).get(str(seed)) or {}).items()
                    if n not in replaced}
    trajectories.update((new.get('trajectories') or {}).get(str(seed)) or {})
    per[seed] = {**old, **{k: new[k] for k in RUN_KEYS if k in new}, 'methods': methods,
                 'trajectories': {str(seed): trajectories} if trajectories else {}}
  for part in per.values():
    part['methods'] = {n: part['methods'][n] for n in schema.ordered_methods(list(part['methods']), order)}
    fairness.with_gap_change(part['methods'])  # against the original's row, which may be the one replaced
  return dict(sorted(per.items()))


def assemble(per_seed: dict, extra=None) -> dict:
  """The report of `per_seed` as `run` writes it, `extra` (the backbone's entry) added."""
  if len(per_seed) > 1:
    results = seed_report.combine(per_seed)
  else:
    (seed, results), = per_seed.items()
    results = {**results, 'seeds': [int(seed)]}
    results['summary'] = seed_report.summary(results)
  results.update(extra or {})
  return results


def readable(results) -> bool:
  """An earlier report this module can take apart (an object with its rows and seeds)."""
  return isinstance(results, dict) and isinstance(results.get('methods'), dict) and \
      all(isinstance(r, dict) for r in results['methods'].values()) and \
      (bool(results.get('seeds')) or isinstance((results.get('config') or {}).get('seed'), int))

"""results.json's schema (docs/RESULTS_SCHEMA.md): its keys, its check (`validate_results`), the
strict JSON it is written as (`plain`: NaN/inf become null, numpy and JAX scalars Python numbers),
the seeds' mean row (`aggregate_seeds`), the environment, and how a row's values are read
(`ordered_methods`, `lookup`, `cell_values`), which the markdown, the plots and the seed report share.
"""
import math
import platform

import numpy as np

TEST_KEYS = ('auc', 'logloss', 'acc')
FORGET_KEYS = ('auc', 'acc', 'logloss', 'jsd', 'sym_kl', 'l2', 'jsd_yesno', 'l2_yesno',
               'mia_auc', 'mia_ref_auc')
FLOAT_KEYS = ('time_s', 'unlearn_time_s', 'compile_s', 'trainable_fraction')
INT_KEYS = ('trainable_params', 'checkpoint_bytes', 'peak_memory_bytes')
NOISE_FLOOR_KEYS = ('jsd', 'sym_kl', 'l2')
# Names the report, README and plots give the distances, so that nobody takes one for the other:
# the paper (and its code) calls the symmetric KL "JSD"; `jsd` is the true Jensen-Shannon divergence.
SYM_KL_NAME = 'symKL (the paper\'s "JSD")'
JSD_NAME = 'JSD (true)'
MIA_KEYS = ('loss', 'confidence', 'entropy', 'modified_entropy', 'reference')  # eval/mia.py's ATTACKS
FAIRNESS_KEYS = ('auc_active', 'auc_inactive', 'gap', 'gap_change')
RANKING_KEYS = ('k', 'negatives', 'positives', 'hr', 'ndcg')  # test.ranking / forget.ranking (eval/ranking.py)
OPTIONAL_GROUPS = (('mia', MIA_KEYS), ('fairness', FAIRNESS_KEYS))  # checked where present (older files lack them)
# methods.<m>.collateral.<group>.<key> (eval/collateral.py): the forget users' other samples, where
# config.data.forget_unit deletes part of a user ('interactions', 'category'); absent for 'user'.
COLLATERAL_GROUPS = ('retained', 'test')
COLLATERAL_KEYS = ('auc', 'sym_kl', 'samples')
# A row's relearn.<setting>.<k> (eval/relearn.py, config.eval.relearn), checked where present.
RELEARN_KEYS = ('sym_kl_original', 'jsd_original', 'sym_kl_retrain', 'forget_auc', 'recovery', 'recovery_vs_retrain')
ENV_KEYS = ('jax', 'devices')


def is_number(x, integer=False) -> bool:
  """A real number (bool is not one); `integer`: one with an integral value."""
  if isinstance(x, (bool, np.bool_)):
    return False
  if integer:
    return isinstance(x, (int, np.integer)) or (isinstance(x, (float, np.floating)) and float(x).is_integer())
  return isinstance(x, (int, float, np.integer, np.floating))


def _check_group(problems, where, group, keys):
  if not isinstance(group, dict):
    problems.append(f'{where}: expected an object, got {type(group).__name__}')
    return
  for key in keys:
    if key not in group:
      problems.append(f'{where}.{key}: missing')
    elif group[key] is not None and not is_number(group[key]):
      problems.append(f'{where}.{key}: expected a number or null, got {group[key]!r}')


def _check_method(problems, where, entry):
  if not isinstance(entry, dict):
    problems.append(f'{where}: expected an object, got {type(entry).__name__}')
    return
  for group, keys in (('test', TEST_KEYS), ('forget', FORGET_KEYS)):
    if group not in entry:
      problems.append(f'{where}.{group}: missing')
    else:
      _check_group(problems, f'{where}.{group}', entry[group], keys)
      if isinstance(entry[group], dict) and 'ranking' in entry[group]:  # written since eval/ranking.py
        _check_group(problems, f'{where}.{group}.ranking', entry[group]['ranking'], RANKING_KEYS)
  for group, keys in OPTIONAL_GROUPS:
    if group in entry:
      _check_group(problems, f'{where}.{group}', entry[group], keys)
  if 'collateral' in entry:
    found = entry['collateral'] if isinstance(entry['collateral'], dict) else {}
    for group in COLLATERAL_GROUPS:
      _check_group(problems, f'{where}.collateral.{group}', found.get(group), COLLATERAL_KEYS)
  relearn = entry.get('relearn')
  if relearn is not None:
    if not isinstance(relearn, dict):
      problems.append(f'{where}.relearn: expected an object, got {type(relearn).__name__}')
    else:
      for setting, points in relearn.items():
        if not isinstance(points, dict):
          problems.append(f'{where}.relearn.{setting}: expected an object, got {type(points).__name__}')
          continue
        for k, point in points.items():
          _check_group(problems, f'{where}.relearn.{setting}.{k}', point, RELEARN_KEYS)
  for key in FLOAT_KEYS + INT_KEYS:
    if key not in entry:
      problems.append(f'{where}.{key}: missing')
    elif entry[key] is not None and not is_number(entry[key], integer=key in INT_KEYS):
      kind = 'an integer' if key in INT_KEYS else 'a number'
      problems.append(f'{where}.{key}: expected {kind} or null, got {entry[key]!r}')


def validate_results(results, required_methods=()):
  """Problems with a results dict against docs/RESULTS_SCHEMA.md (empty list = valid)."""
  problems = []
  if not isinstance(results, dict):
    return [f'results: expected an object, got {type(results).__name__}']
  methods = results.get('methods')
  if not isinstance(methods, dict):
    problems.append('methods: missing or not an object')
    methods = {}
  for name in required_methods:
    if name not in methods:
      problems.append(f'methods.{name}: missing')
  for name, entry in methods.items():
    _check_method(problems, f'methods.{name}', entry)
    seeds = entry.get('seeds') if isinstance(entry, dict) else None
    if seeds is not None:
      if not isinstance(seeds, list):
        problems.append(f'methods.{name}.seeds: expected a list')
      else:
        for i, seed_entry in enumerate(seeds):
          _check_method(problems, f'methods.{name}.seeds[{i}]', seed_entry)
  if 'noise_floor' not in results:
    problems.append('noise_floor: missing')
  else:
    _check_group(problems, 'noise_floor', results['noise_floor'], NOISE_FLOOR_KEYS)
  if 'mia' in results:
    info = results['mia']
    if not isinstance(info, dict) or not isinstance(info.get('attacks'), list) or 'reference_model' not in info:
      problems.append('mia: expected an object with "attacks" (a list) and "reference_model"')
  if 'fairness' in results:
    info = results['fairness']
    if not isinstance(info, dict) or not isinstance(info.get('rule'), str) or \
        not is_number(info.get('median_train_samples')):
      problems.append('fairness: expected an object with "rule" (text) and "median_train_samples" (a number)')
  if 'ranking' in results:
    info = results['ranking']
    if not isinstance(info, dict) or not all(is_number(info.get(k)) for k in ('k', 'negatives')):
      problems.append('ranking: expected an object with "k" and "negatives" (numbers)')
  if 'collateral' in results:
    info = results['collateral']
    if not isinstance(info, dict) or not isinstance(info.get('unit'), str) or \
        not all(is_number(info.get(k), integer=True) for k in ('users',) + COLLATERAL_GROUPS):
      problems.append('collateral: expected an object with "unit" (text) and "users", "retained", "test" (counts)')
  if 'forget_unit' in results and not isinstance(results['forget_unit'], str):
    problems.append('forget_unit: expected text (user, interactions or category)')
  if not isinstance(results.get('config'), dict):
    problems.append('config: missing or not an object')
  env = results.get('env')
  if not isinstance(env, dict):
    problems.append('env: missing or not an object')
  else:
    problems.extend(f'env.{key}: missing' for key in ENV_KEYS if key not in env)
  return problems


def env_info():
  """Where the numbers came from: JAX version, devices, platform."""
  import jax  # heavy: jax, for a run writing its results (reading or checking a report loads none)
  return {
      'jax': jax.__version__,
      'devices': [str(d) for d in jax.devices()],
      'platform': jax.default_backend(),
      'device_count': jax.device_count(),
      'process_count': jax.process_count(),
      'python': platform.python_version(),
  }


def aggregate_seeds(per_seed):
  """One method entry from per-seed entries: numeric leaves averaged, `seeds` kept."""
  def mean_of(values):
    if all(isinstance(v, dict) for v in values):
      return {k: mean_of([v.get(k) for v in values]) for k in values[0]}
    numbers = [float(v) for v in values if is_number(v) and math.isfinite(float(v))]
    if not numbers:
      return None
    m = float(np.mean(numbers))
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    return int(round(m)) if integers else m
  entry = mean_of([{k: v for k, v in e.items() if k != 'seeds'} for e in per_seed])
  entry['seeds'] = list(per_seed)
  return entry


def plain(obj):
  """JSON-safe copy: numpy/JAX scalars and arrays to Python, NaN/inf to None."""
  if hasattr(obj, 'to_dict') and callable(obj.to_dict):  # ml_collections.ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, dict):
    return {str(k): plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [plain(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(float(obj)) else None
  if hasattr(obj, '__array__'):
    return plain(np.asarray(obj).tolist())
  return obj


def ordered_methods(methods, order=()):
  """The rows named in `order` first, in that order, then every other row as given. The
  commands pass methods.spec.report_order(): original, retrain, then the registered methods."""
  known = [m for m in order if m in methods]
  return known + [m for m in methods if m not in order]


def lookup(entry, path):
  """The finite number at `path` (keys) of a method entry, else None."""
  for key in path:
    if not isinstance(entry, dict):
      return None
    entry = entry.get(key)
  return entry if is_number(entry) and math.isfinite(float(entry)) else None


def cell_values(entry, path):
  """The per-seed values of a cell if the method has seeds, else its single value."""
  seeds = entry.get('seeds') or []
  values = [lookup(s, path) for s in seeds] if seeds else [lookup(entry, path)]
  return [float(v) for v in values if v is not None]

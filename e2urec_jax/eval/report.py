"""The experiment's report: results.json (schema in docs/RESULTS_SCHEMA.md), results.md, plots.

The JSON is the record other tools read, so it is validated (`validate_results`) and
made strict: NaN/inf become null (a one-class AUC, an unmeasured memory peak), numpy
and JAX scalars become Python numbers. The markdown table follows the paper's layout
(methods as rows) so a run can be read against the paper's Table 2 at a glance.
Plots use matplotlib's object API with the Agg canvas: no pyplot global state, no display.
"""
import contextlib
import io
import math
import os
import tempfile

import numpy as np

from e2urec_jax import runtime, storage

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
OPTIONAL_GROUPS = (('mia', MIA_KEYS), ('fairness', FAIRNESS_KEYS))  # checked where present (older files lack them)
ENV_KEYS = ('jax', 'devices')


# Schema. ---------------------------------------------------------------------------

def _is_number(x, integer=False):
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
    elif group[key] is not None and not _is_number(group[key]):
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
  for group, keys in OPTIONAL_GROUPS:
    if group in entry:
      _check_group(problems, f'{where}.{group}', entry[group], keys)
  for key in FLOAT_KEYS + INT_KEYS:
    if key not in entry:
      problems.append(f'{where}.{key}: missing')
    elif entry[key] is not None and not _is_number(entry[key], integer=key in INT_KEYS):
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
        not _is_number(info.get('median_train_samples')):
      problems.append('fairness: expected an object with "rule" (text) and "median_train_samples" (a number)')
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
  import platform
  import jax
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
    numbers = [float(v) for v in values if _is_number(v) and math.isfinite(float(v))]
    if not numbers:
      return None
    m = float(np.mean(numbers))
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    return int(round(m)) if integers else m
  entry = mean_of([{k: v for k, v in e.items() if k != 'seeds'} for e in per_seed])
  entry['seeds'] = list(per_seed)
  return entry


def _plain(obj):
  """JSON-safe copy: numpy/JAX scalars and arrays to Python, NaN/inf to None."""
  if hasattr(obj, 'to_dict') and callable(obj.to_dict):  # ml_collections.ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, dict):
    return {str(k): _plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_plain(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(float(obj)) else None
  if hasattr(obj, '__array__'):
    return _plain(np.asarray(obj).tolist())
  return obj


# The table. -------------------------------------------------------------------------

def ordered_methods(methods, order=()):
  """The rows named in `order` first, in that order, then every other row as given. The
  commands pass methods.spec.report_order(): original, retrain, then the registered methods."""
  known = [m for m in order if m in methods]
  return known + [m for m in methods if m not in order]


def _lookup(entry, path):
  for key in path:
    if not isinstance(entry, dict):
      return None
    entry = entry.get(key)
  return entry if _is_number(entry) and math.isfinite(float(entry)) else None


def _values(entry, path):
  """The per-seed values of a cell if the method has seeds, else its single value."""
  seeds = entry.get('seeds') or []
  values = [_lookup(s, path) for s in seeds] if seeds else [_lookup(entry, path)]
  return [float(v) for v in values if v is not None]


def _human_bytes(n):
  for unit in ('B', 'KB', 'MB', 'GB'):
    if abs(n) < 1024 or unit == 'GB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024.0


def _cell(entry, path, fmt):
  values = _values(entry, path)
  if not values:
    return '–'
  text = fmt(float(np.mean(values)))
  if len(values) > 1 and max(values) > min(values):  # constant across seeds: no spread to show
    text += ' ± ' + fmt(float(np.std(values, ddof=1)))
  return text


def _params_cell(entry):
  pct = _cell(entry, ('trainable_fraction',), lambda x: f'{100 * x:.3g}')
  count = _lookup(entry, ('trainable_params',))
  if count is None:
    return pct
  return f'{pct} ({count / 1e6:.3g}M)' if count >= 1e5 else f'{pct} ({int(count)})'


_F4 = lambda x: f'{x:.4f}'  # noqa: E731
_G4 = lambda x: f'{x:.4g}'  # noqa: E731
MAIN_COLUMNS = (
    ('test AUC', ('test', 'auc'), _F4), ('test LogLoss', ('test', 'logloss'), _F4),
    ('test ACC', ('test', 'acc'), _F4), (f'forget {SYM_KL_NAME}', ('forget', 'sym_kl'), _G4),
    (f'forget {JSD_NAME}', ('forget', 'jsd'), _G4), ('forget L2', ('forget', 'l2'), _G4),
    ('forget AUC', ('forget', 'auc'), _F4), ('forget ACC', ('forget', 'acc'), _F4),
    ('MIA AUC', ('forget', 'mia_auc'), _F4),
    ('unlearning loop (s)', ('unlearn_time_s',), lambda x: f'{x:.1f}'),
    ('whole cost (s)', ('time_s',), lambda x: f'{x:.1f}'),
)
DETAIL_COLUMNS = (
    ('forget LogLoss', ('forget', 'logloss'), _F4), (f'{JSD_NAME} Yes/No', ('forget', 'jsd_yesno'), _G4),
    ('L2 Yes/No', ('forget', 'l2_yesno'), _G4), ('MIA-ref AUC', ('forget', 'mia_ref_auc'), _F4),
    ('compile (s)', ('compile_s',), lambda x: f'{x:.1f}'),
    ('peak memory', ('peak_memory_bytes',), _human_bytes),
)


def _table(methods, columns, extra=(), order=()):
  header = ['method'] + [c[0] for c in columns] + [e[0] for e in extra]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name in ordered_methods(methods, order):
    entry = methods[name] if isinstance(methods[name], dict) else {}
    seeds = len(entry.get('seeds') or [])
    cells = [f'`{name}`' + (f' ({seeds} seeds)' if seeds > 1 else '')]
    cells += [_cell(entry, path, fmt) for _, path, fmt in columns]
    cells += [fn(entry) for _, fn in extra]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def markdown_report(results, order=()):
  """results.md text: the paper-layout table, a details table, the noise floor, the env."""
  methods = results.get('methods', {})
  extra = (('trainable params (%)', _params_cell),
           ('checkpoint', lambda e: _cell(e, ('checkpoint_bytes',), _human_bytes)))
  out = ['# E2URec unlearning results', '',
         'Test: recommendation quality on the test split (P(Yes) = softmax over the Yes/No '
         'logits). Forget: the forget set. symKL / JSD / L2: distance of the full-vocabulary '
         'distribution at the first answer position to the retrained model\'s. '
         f'{SYM_KL_NAME} = 0.5 KL(p||q) + 0.5 KL(q||p), the quantity the paper and its code report '
         f'as "JSD" (results.json: forget.sym_kl); {JSD_NAME} is the Jensen-Shannon divergence '
         '(<= ln 2; forget.jsd), about a quarter of symKL for nearby distributions. MIA AUC: loss '
         'attack telling forget samples from non-members (the retrained model\'s value is the target; more '
         'attacks below). Unlearning loop: the '
         'method\'s training steps alone, the paper\'s accounting (for trained models, up to the '
         'kept check; unlearn_time_s). Whole cost: everything the method needs, compilation, '
         'validation, checkpoints and E2URec\'s augmented model included, the trajectory scoring done while it '
         'trained left out (time_s). Mean ± std over '
         'seeds where a method has several.', '']
  out += _table(methods, MAIN_COLUMNS, extra, order)
  out += ['', '## Details', '']
  out += _table(methods, DETAIL_COLUMNS, order=order)
  out += _mia_section(results, order)
  out += _fairness_section(results, order)
  floor = results.get('noise_floor') or {}
  names = {'sym_kl': SYM_KL_NAME, 'jsd': JSD_NAME, 'l2': 'L2'}
  parts = [f'{names[k]} {_G4(floor[k])}' for k in ('sym_kl', 'jsd', 'l2') if _is_number(floor.get(k))]
  out += ['', '**Noise floor** (retrain vs retrain, different seeds): '
          + (', '.join(parts) if parts else 'not measured')]
  bb = results.get('backbone')
  if bb:  # config.pretrain: its cost stands apart, charged to no model (the paper's download is not either)
    out += ['', f'**Pretrained backbone** ({"reused" if bb.get("reused") else "pretrained by this run"}): '
            f'{bb.get("population")}; {bb.get("time_s", 0):.0f} s, not in any row\'s cost; {bb.get("path")}']
  from e2urec_jax.eval import seed_report
  out += seed_report.markdown_sections(results)
  env = results.get('env') or {}
  if env:
    out += ['', f"Environment: jax {env.get('jax', '?')}, platform {env.get('platform', '?')}, "
            f"devices {', '.join(map(str, env.get('devices', [])))}"]
  return '\n'.join(out) + '\n'


def _has_group(methods, group):
  return any(isinstance(e, dict) and isinstance(e.get(group), dict) for e in methods.values())


def _beside(target):
  """A cell's text: the value, and its difference from the target row's value (retrain's)."""
  def cell(entry, path, fmt):
    text = _cell(entry, path, fmt)
    values, goal = _values(entry, path), _values(target, path) if target else []
    if values and goal and entry is not target:
      text += f' ({float(np.mean(values)) - float(np.mean(goal)):+.4f})'
    return text
  return cell


def _group_table(methods, group, keys, titles, cell, order):
  header = ['method'] + list(titles)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name in ordered_methods(methods, order):
    entry = methods[name] if isinstance(methods[name], dict) else {}
    if not isinstance(entry.get(group), dict):
      continue
    lines.append('| ' + ' | '.join([f'`{name}`'] + [cell(entry, (group, k), _F4) for k in keys]) + ' |')
  return lines


def _mia_section(results, order):
  methods = results.get('methods', {})
  if not _has_group(methods, 'mia'):
    return []
  info = results.get('mia') or {}
  ref = info.get('reference_model')
  target = methods.get('retrain') if isinstance(methods.get('retrain'), dict) else None
  out = ['', '## Membership inference', '',
         f"AUC of telling forget-set samples (members, {info.get('members', '?')}) from test samples of users "
         f"outside the forget set (non-members, {info.get('nonmembers', '?')}) by each attack's score "
         '(eval/mia.py): loss, confidence (probability of the true first answer token), entropy and modified '
         'entropy of the Yes/No prediction, and the reference attack (loss minus the loss under '
         + (f'`{ref}`, a model trained without the forget users' if ref else 'a reference model: none in this run')
         + '). The target is the retrained model\'s value, not 0.5 (forget users differ from other users); '
         'each cell shows the value and, in brackets, its difference from retrain\'s.', '']
  return out + _group_table(methods, 'mia', MIA_KEYS, ('loss', 'confidence', 'entropy', 'modified entropy',
                                                       'reference'), _beside(target), order)


def _fairness_section(results, order):
  methods = results.get('methods', {})
  if not _has_group(methods, 'fairness'):
    return []
  info = results.get('fairness') or {}
  out = ['', '## Fairness: active vs inactive users', '',
         f"Split: {info.get('rule', '?')}. Median train samples per user {info.get('median_train_samples', '?')}; "
         f"active: {info.get('active_users', '?')} users ({info.get('active_test_samples', '?')} test samples), "
         f"inactive: {info.get('inactive_users', '?')} users ({info.get('inactive_test_samples', '?')} test samples). "
         'Gap change: this model\'s gap minus the original model\'s (> 0: active users gained on inactive ones).', '']
  return out + _group_table(methods, 'fairness', FAIRNESS_KEYS, ('active AUC', 'inactive AUC', 'gap',
                                                                 'gap change vs original'), _cell, order)


# Plots. -----------------------------------------------------------------------------

def _new_figure():
  from matplotlib.figure import Figure
  return Figure(figsize=(7, 4.5), dpi=110, layout='constrained')


def plot_distance_vs_time(results, order=()):
  """Forget-set symKL (the paper's "JSD") to the retrained model against time (log x): filled
  markers at the whole cost (time_s), open ones at the unlearning loop alone (unlearn_time_s)."""
  fig = _new_figure()
  ax = fig.add_subplot()
  methods = results.get('methods', {})
  xs = []
  has_loop = False
  for name in ordered_methods(methods, order):
    entry = methods[name] if isinstance(methods[name], dict) else {}
    t, d = _values(entry, ('time_s',)), _values(entry, ('forget', 'sym_kl'))
    loop = _values(entry, ('unlearn_time_s',))
    if name == 'original' and d:  # No unlearning at all: the level to get below.
      ax.axhline(np.mean(d), color='gray', ls=':', lw=1, label='original (no unlearning)')
    elif name == 'retrain' and t:  # The gold standard: its cost is the one to beat.
      ax.axvline(np.mean(t), color='gray', ls='-.', lw=1, label='retrain: whole cost')
      if loop and np.mean(loop) > 0:
        ax.axvline(np.mean(loop), color='silver', ls='-.', lw=1, label='retrain: training loop')
    elif t and d and np.mean(t) > 0:
      x, y = float(np.mean(t)), float(np.mean(d))
      xs.append(x)
      color = 'tab:red' if name.startswith('e2urec') else 'tab:blue'
      ax.plot([x], [y], 'o', color=color)
      if loop and 0 < np.mean(loop) < x:
        ax.plot([float(np.mean(loop)), x], [y, y], '-', color=color, lw=0.8, alpha=0.5)
        ax.plot([float(np.mean(loop))], [y], 'o', mfc='none', color=color)
        has_loop = True
      ax.annotate(name, (x, y), textcoords='offset points', xytext=(5, 4), fontsize=8)
  if xs:  # legend entries for the two markers
    ax.plot([], [], 'o', color='dimgray', label='method: whole cost')
    if has_loop:
      ax.plot([], [], 'o', mfc='none', color='dimgray', label='method: unlearning loop alone')
  floor = (results.get('noise_floor') or {}).get('sym_kl')
  if _is_number(floor):
    ax.axhline(float(floor), color='green', ls='--', lw=1, label='noise floor (retrain vs retrain)')
  if xs or ax.lines:
    from matplotlib.ticker import FuncFormatter
    ax.set_xscale('log')  # plain numbers at 1, 2, 5 x 10^k: readable over a narrow range too
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f'{x:g}'))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f'{x:g}' if f'{x:.0e}'[0] in '25' else ''))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc='best')
  else:
    ax.text(0.5, 0.5, 'no methods with both time and distance', ha='center', transform=ax.transAxes)
  ax.set_xlabel('time (s, log scale): whole cost (filled), unlearning loop (open)')
  ax.set_ylabel(f'forget-set {SYM_KL_NAME}\nto the retrained model')
  ax.set_title('Distance to retrain vs cost')
  return fig


def plot_test_auc(results, order=()):
  """Test AUC per method, with the seed std as error bars and the original as a line."""
  fig = _new_figure()
  ax = fig.add_subplot()
  methods = results.get('methods', {})
  names, means, errs = [], [], []
  for name in ordered_methods(methods, order):
    values = _values(methods[name] if isinstance(methods[name], dict) else {}, ('test', 'auc'))
    if values:
      names.append(name)
      means.append(float(np.mean(values)))
      errs.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
  if names:
    colors = ['tab:red' if n.startswith('e2urec') else 'tab:gray' if n in ('original', 'retrain')
              else 'tab:blue' for n in names]
    ax.bar(range(len(names)), means, yerr=errs if any(errs) else None, color=colors, capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha='right', fontsize=8)
    low, high = min(means) - max(errs) - 0.05, max(means) + max(errs) + 0.03
    ax.set_ylim(max(0.0, low), min(1.0, high))
    if 'original' in names:
      ax.axhline(means[names.index('original')], color='black', ls='--', lw=1, label='original')
      ax.legend(fontsize=8)
  else:
    ax.text(0.5, 0.5, 'no test AUC', ha='center', transform=ax.transAxes)
  ax.set_ylabel('test AUC')
  ax.set_title('Test AUC per method')
  return fig


# Writing. ---------------------------------------------------------------------------

@contextlib.contextmanager
def _atomic_file(path, mode):
  if storage.is_remote(path):  # one object write when the block ends (storage.py)
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    storage.write_bytes(path, data if isinstance(data, bytes) else data.encode())
    return
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp_')
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    runtime.publish(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_report(workdir, results, order=()):
  """Writes results.json, results.md, distance_vs_time.png, test_auc.png; returns their paths.

  Every file is written to a temporary name and renamed, so a crash never leaves a
  half-written report. Missing methods are skipped; nothing is required beyond a
  `methods` dict, so a partial run can still be reported (check `validate_results`).
  """
  storage.makedirs(workdir)
  clean = _plain(results)
  paths = {name: os.path.join(workdir, name) for name in
           ('results.json', 'results.md', 'distance_vs_time.png', 'test_auc.png')}
  runtime.write_json(paths['results.json'], clean)
  with _atomic_file(paths['results.md'], 'w') as f:
    f.write(markdown_report(clean, order))
  plots = [('distance_vs_time.png', plot_distance_vs_time), ('test_auc.png', plot_test_auc)]
  if clean.get('trajectories'):
    from e2urec_jax.eval import seed_report
    paths['trajectories.png'] = os.path.join(workdir, 'trajectories.png')
    plots.append(('trajectories.png', seed_report.plot_trajectories))
  for name, plot in plots:
    fig = plot(clean, order)
    with _atomic_file(paths[name], 'wb') as f:
      fig.savefig(f, format='png')
  return paths

"""results.md: the paper-layout table (methods as rows, so a run reads against the paper's Table 2),
a details table, the membership-inference and fairness sections, the noise floor, the backbone,
the seed report's sections and the environment.
"""
import numpy as np

from e2urec_jax.eval import relearn_report, report_schema as schema, seed_report


def _human_bytes(n):
  for unit in ('B', 'KB', 'MB', 'GB'):
    if abs(n) < 1024 or unit == 'GB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024.0


def _cell(entry, path, fmt):
  values = schema.cell_values(entry, path)
  if not values:
    return '–'
  text = fmt(float(np.mean(values)))
  if len(values) > 1 and max(values) > min(values):  # constant across seeds: no spread to show
    text += ' ± ' + fmt(float(np.std(values, ddof=1)))
  return text


def _params_cell(entry):
  pct = _cell(entry, ('trainable_fraction',), lambda x: f'{100 * x:.3g}')
  count = schema.lookup(entry, ('trainable_params',))
  if count is None:
    return pct
  return f'{pct} ({count / 1e6:.3g}M)' if count >= 1e5 else f'{pct} ({int(count)})'


_F4 = lambda x: f'{x:.4f}'  # noqa: E731
_G4 = lambda x: f'{x:.4g}'  # noqa: E731
MAIN_COLUMNS = (
    ('test AUC', ('test', 'auc'), _F4), ('test LogLoss', ('test', 'logloss'), _F4),
    ('test ACC', ('test', 'acc'), _F4), (f'forget {schema.SYM_KL_NAME}', ('forget', 'sym_kl'), _G4),
    (f'forget {schema.JSD_NAME}', ('forget', 'jsd'), _G4), ('forget L2', ('forget', 'l2'), _G4),
    ('forget AUC', ('forget', 'auc'), _F4), ('forget ACC', ('forget', 'acc'), _F4),
    ('MIA AUC', ('forget', 'mia_auc'), _F4),
    ('unlearning loop (s)', ('unlearn_time_s',), lambda x: f'{x:.1f}'),
    ('whole cost (s)', ('time_s',), lambda x: f'{x:.1f}'),
)
DETAIL_COLUMNS = (
    ('forget LogLoss', ('forget', 'logloss'), _F4), (f'{schema.JSD_NAME} Yes/No', ('forget', 'jsd_yesno'), _G4),
    ('L2 Yes/No', ('forget', 'l2_yesno'), _G4), ('MIA-ref AUC', ('forget', 'mia_ref_auc'), _F4),
    ('compile (s)', ('compile_s',), lambda x: f'{x:.1f}'),
    ('peak memory', ('peak_memory_bytes',), _human_bytes),
)


def _table(methods, columns, extra=(), order=()):
  header = ['method'] + [c[0] for c in columns] + [e[0] for e in extra]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name in schema.ordered_methods(methods, order):
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
         f'{schema.SYM_KL_NAME} = 0.5 KL(p||q) + 0.5 KL(q||p), the quantity the paper and its code report '
         f'as "JSD" (results.json: forget.sym_kl); {schema.JSD_NAME} is the Jensen-Shannon divergence '
         '(<= ln 2; forget.jsd), about a quarter of symKL for nearby distributions. MIA AUC: loss '
         'attack telling forget samples from non-members (the retrained model\'s value is the target; more '
         'attacks below). Unlearning loop: the '
         'method\'s training steps alone, the paper\'s accounting (for trained models, up to the '
         'kept check; unlearn_time_s). Whole cost: everything the method needs, compilation, '
         'validation, checkpoints and E2URec\'s augmented model included, the trajectory scoring done while it '
         'trained left out (time_s). Mean ± std over '
         'seeds where a method has several.', '']
  note = (results.get('forget_set') or {}).get('note')
  if note:  # forget requests deleted every forget user: the forget columns are empty, and this says why
    out += [f'**Forget set**: {note}.', '']
  out += _table(methods, MAIN_COLUMNS, extra, order)
  out += ['', '## Details', '']
  ranked = _ranking_columns(methods)
  if ranked:
    out += [_ranking_text(results, ranked[0][0].split('@')[1]), '']
  out += _table(methods, DETAIL_COLUMNS + ranked, order=order)
  out += _collateral_section(results, order)
  out += _mia_section(results, order)
  out += _fairness_section(results, order)
  out += relearn_report.markdown_section(results, order)
  floor = results.get('noise_floor') or {}
  names = {'sym_kl': schema.SYM_KL_NAME, 'jsd': schema.JSD_NAME, 'l2': 'L2'}
  parts = [f'{names[k]} {_G4(floor[k])}' for k in ('sym_kl', 'jsd', 'l2') if schema.is_number(floor.get(k))]
  out += ['', '**Noise floor** (retrain vs retrain, different seeds): '
          + (', '.join(parts) if parts else 'not measured')]
  bb = results.get('backbone')
  if bb:  # config.pretrain: its cost stands apart, charged to no model (the paper's download is not either)
    out += ['', f'**Pretrained backbone** ({"reused" if bb.get("reused") else "pretrained by this run"}): '
            f'{bb.get("population")}; {bb.get("time_s", 0):.0f} s, not in any row\'s cost; {bb.get("path")}']
  out += seed_report.markdown_sections(results)
  env = results.get('env') or {}
  if env:
    out += ['', f"Environment: jax {env.get('jax', '?')}, platform {env.get('platform', '?')}, "
            f"devices {', '.join(map(str, env.get('devices', [])))}"]
  return '\n'.join(out) + '\n'


def _ranking_columns(methods):
  """HR@k and NDCG@k on test and forget (eval/ranking.py), when some row has them (k: the first's)."""
  ks = [schema.lookup(e, (g, 'ranking', 'k')) for e in methods.values() if isinstance(e, dict) for g in ('test', 'forget')]
  ks = [int(k) for k in ks if k is not None]
  if not ks:
    return ()
  return tuple((f'{g} {name}@{ks[0]}', (g, 'ranking', key), _F4)
               for g in ('test', 'forget') for name, key in (('HR', 'hr'), ('NDCG', 'ndcg')))


def _ranking_text(results, k):
  info = results.get('ranking') or {}
  negatives, positives = info.get('negatives', '?'), info.get('positives') or {}
  return (f'HR@{k} / NDCG@{k} (eval/ranking.py): each ranked positive sample\'s item among {negatives} items its '
          'user never rated, every candidate scored by P(Yes) on the positive\'s prompt with the item swapped '
          f"(the same draws for every model; {positives.get('test', '?')} test and {positives.get('forget', 0)} "
          'forget positives, a fixed random subset); ties rank the positive below equal-scored negatives. '
          'HR: share ranked in the top k; NDCG: mean 1/log2(rank + 1) within the top k.')


def _has_group(methods, group):
  return any(isinstance(e, dict) and isinstance(e.get(group), dict) for e in methods.values())


def _beside(target):
  """A cell's text: the value, and its difference from the target row's value (retrain's)."""
  def cell(entry, path, fmt):
    text = _cell(entry, path, fmt)
    values, goal = schema.cell_values(entry, path), schema.cell_values(target, path) if target else []
    if values and goal and entry is not target:
      text += f' ({float(np.mean(values)) - float(np.mean(goal)):+.4f})'
    return text
  return cell


def _group_table(methods, group, keys, titles, cell, order):
  header = ['method'] + list(titles)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name in schema.ordered_methods(methods, order):
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
  return out + _group_table(methods, 'mia', schema.MIA_KEYS, ('loss', 'confidence', 'entropy', 'modified entropy',
                                                       'reference'), _beside(target), order)


COLLATERAL_COLUMNS = (
    (f'deleted {schema.SYM_KL_NAME}', ('forget', 'sym_kl'), _G4), ('deleted AUC', ('forget', 'auc'), _F4),
    ('retained symKL', ('collateral', 'retained', 'sym_kl'), _G4),
    ('retained AUC', ('collateral', 'retained', 'auc'), _F4),
    ('test symKL', ('collateral', 'test', 'sym_kl'), _G4), ('test AUC', ('collateral', 'test', 'auc'), _F4),
)


def _collateral_section(results, order):
  """The deleted interactions against the same users' other samples (eval/collateral.py)."""
  methods = results.get('methods', {})
  if not _has_group(methods, 'collateral'):
    return []
  info = results.get('collateral') or {}
  unit = info.get('unit', results.get('forget_unit', '?'))
  what = {'interactions': 'a share of their train samples',
          'category': 'their train samples of one item category'}
  out = ['', '## Deleted interactions and the same users\' other samples (collateral)', '',
         f"Forget unit '{unit}': {info.get('users', '?')} users each deleted {what.get(unit, unit)} (the forget "
         'set, "deleted"); they keep the rest. Retained: their train samples that were not deleted '
         f"({info.get('retained', '?')}; the retrained model still trained on them); test: their test samples "
         f"({info.get('test', '?')}). symKL to the retrained model (0 = answers as exact deletion would) and AUC "
         'on each; a method that erases the whole user moves the collateral columns, one that keeps everything '
         'stays near them but not near the deleted ones.', '']
  return out + _table({n: e for n, e in methods.items() if isinstance(e, dict) and 'collateral' in e},
                      COLLATERAL_COLUMNS, order=order)


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
  return out + _group_table(methods, 'fairness', schema.FAIRNESS_KEYS, ('active AUC', 'inactive AUC', 'gap',
                                                                 'gap change vs original'), _cell, order)

"""The report: files, table rows, plots, schema validation."""
import copy
import json
import math
import os

import numpy as np

from e2urec_jax.eval import report

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _entry(rng, time_s, fraction=0.01):
  return {
      'test': {'auc': 0.7 + 0.05 * rng.random(), 'logloss': 0.6, 'acc': 0.65},
      'forget': {'auc': 0.72, 'acc': 0.66, 'logloss': 0.58, 'jsd': 0.01 * rng.random() + 1e-4,
                 'sym_kl': 0.04, 'l2': 0.05, 'jsd_yesno': 0.002, 'l2_yesno': 0.03,
                 'mia_auc': 0.55, 'mia_ref_auc': 0.52},
      'time_s': time_s, 'unlearn_time_s': 0.6 * time_s, 'compile_s': 2.5, 'trainable_params': int(fraction * 6e7),
      'trainable_fraction': fraction, 'checkpoint_bytes': 3_500_000, 'peak_memory_bytes': None,
  }


def synthetic_results():
  rng = np.random.default_rng(0)
  methods = {
      'npo': _entry(rng, 30.0, 1.0),
      'original': _entry(rng, 500.0, 1.0),
      'e2urec': _entry(rng, 12.0),
      'retrain': _entry(rng, 400.0, 1.0),
      'e2urec[alpha=4]': _entry(rng, 12.5),
      'neggrad': _entry(rng, 60.0, 1.0),
  }
  methods['retrain']['forget']['jsd'] = 0.0
  methods['e2urec']['test']['auc'] = np.float32(0.74)  # numpy scalars are made plain
  methods['e2urec']['forget']['auc'] = float('nan')  # one-class AUC becomes null
  methods['e2urec']['seeds'] = [_entry(rng, 11.0 + i) for i in range(3)]
  return {
      'methods': methods,
      'noise_floor': {'jsd': 2e-4, 'sym_kl': 8e-4, 'l2': 0.01},
      'config': {'seed': 42, 'unlearn': {'methods': 'e2urec,neggrad,npo'}},
      'env': {'jax': '0.10.2', 'devices': ['TFRT_CPU_0'], 'platform': 'cpu'},
  }


def test_write_report(tmp_path):
  results = synthetic_results()
  assert report.validate_results(results) == []
  order = ('original', 'retrain', 'e2urec', 'neggrad', 'badt', 'npo')  # as methods.spec.report_order() gives it
  paths = report.write_report(str(tmp_path), results, order=order)
  for name in ('results.json', 'results.md', 'distance_vs_time.png', 'test_auc.png'):
    assert os.path.exists(tmp_path / name), name
    assert paths[name] == str(tmp_path / name)
  assert not [f for f in os.listdir(tmp_path) if f.startswith('.tmp_')]
  for name in ('distance_vs_time.png', 'test_auc.png'):
    data = (tmp_path / name).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000

  text = (tmp_path / 'results.json').read_text()
  loaded = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # strict
  assert loaded['methods']['e2urec']['forget']['auc'] is None
  assert report.validate_results(loaded) == []

  md = (tmp_path / 'results.md').read_text()
  rows = [line for line in md.splitlines() if line.startswith('| `')]
  names = [row.split('`')[1] for row in rows[:len(results['methods'])]]
  assert names == ['original', 'retrain', 'e2urec', 'neggrad', 'npo', 'e2urec[alpha=4]']
  assert len(rows) == 2 * len(results['methods'])  # main table + details table
  e2urec_row = rows[2]
  assert ' ± ' in e2urec_row  # seeds: mean ± std
  assert 'Noise floor' in md


def test_distance_and_time_names_cannot_be_misread(tmp_path):
  """The headline forget distance is the paper's quantity (sym_kl) under a name that says so;
  the true JSD is labelled as such; both times are shown, each labelled."""
  results = synthetic_results()
  report.write_report(str(tmp_path), results, order=('original', 'retrain', 'e2urec'))
  md = (tmp_path / 'results.md').read_text()
  header = next(line for line in md.splitlines() if line.startswith('| method'))
  cells = [c.strip() for c in header.strip('|').split('|')]
  sym, true = 'forget symKL (the paper\'s "JSD")', 'forget JSD (true)'
  assert cells.index(sym) < cells.index(true)  # the paper's quantity first
  assert 'forget JSD' not in cells  # no bare "JSD" column that could be read as the paper's
  assert {'unlearning loop (s)', 'whole cost (s)'} <= set(cells)
  row = next(line for line in md.splitlines() if line.startswith('| `npo`'))
  values = [c.strip() for c in row.strip('|').split('|')]
  assert values[cells.index(sym)] == f"{results['methods']['npo']['forget']['sym_kl']:.4g}"
  assert values[cells.index(true)] == f"{results['methods']['npo']['forget']['jsd']:.4g}"
  assert values[cells.index('unlearning loop (s)')] == '18.0' and values[cells.index('whole cost (s)')] == '30.0'
  assert 'symKL (the paper\'s "JSD") 0.0008' in md  # the noise floor names it the same way
  entry = report.aggregate_seeds([_entry(np.random.default_rng(2), 10.0), _entry(np.random.default_rng(3), 20.0)])
  assert entry['unlearn_time_s'] == 9.0


def test_validate_results_catches_problems():
  good = synthetic_results()
  bad = copy.deepcopy(good)
  del bad['methods']['e2urec']['forget']['jsd']
  assert report.validate_results(bad) == ['methods.e2urec.forget.jsd: missing']
  bad = copy.deepcopy(good)
  del bad['methods']['npo']['time_s']
  bad['noise_floor'].pop('l2')
  bad['env'].pop('jax')
  problems = report.validate_results(bad)
  assert set(problems) == {'methods.npo.time_s: missing', 'noise_floor.l2: missing', 'env.jax: missing'}
  bad = copy.deepcopy(good)
  del bad['methods']['e2urec']['unlearn_time_s']
  assert report.validate_results(bad) == ['methods.e2urec.unlearn_time_s: missing']
  bad = copy.deepcopy(good)
  bad['methods']['retrain']['checkpoint_bytes'] = 'big'
  assert len(report.validate_results(bad)) == 1
  assert report.validate_results({}) != []
  assert report.validate_results(good, required_methods=('badt',)) == ['methods.badt: missing']


def test_aggregate_seeds_and_env():
  rng = np.random.default_rng(1)
  per_seed = [_entry(rng, 10.0), _entry(rng, 14.0)]
  entry = report.aggregate_seeds(per_seed)
  assert entry['time_s'] == 12.0
  assert isinstance(entry['trainable_params'], int)
  assert entry['peak_memory_bytes'] is None
  assert math.isclose(entry['test']['auc'], (per_seed[0]['test']['auc'] + per_seed[1]['test']['auc']) / 2)
  assert len(entry['seeds']) == 2
  env = report.env_info()
  assert {'jax', 'devices', 'platform'} <= set(env) and env['devices']


def test_mia_and_fairness_sections(tmp_path):
  results = synthetic_results()
  attacks = ('loss', 'confidence', 'entropy', 'modified_entropy', 'reference')
  for i, (name, entry) in enumerate(results['methods'].items()):
    entry['mia'] = {a: 0.5 + 0.01 * i + 0.001 * k for k, a in enumerate(attacks)}
    entry['fairness'] = {'auc_active': 0.8, 'auc_inactive': 0.7 - 0.01 * i, 'gap': 0.1 + 0.01 * i, 'gap_change': None}
  results['methods']['retrain']['mia']['loss'] = 0.6
  results['methods']['e2urec']['mia']['loss'] = 0.65
  results['methods']['e2urec']['mia']['reference'] = float('nan')  # not measured: null
  for seed_entry in results['methods']['e2urec']['seeds']:  # a seeded row's cells come from its seeds
    seed_entry['mia'] = dict(results['methods']['e2urec']['mia'])
    seed_entry['fairness'] = dict(results['methods']['e2urec']['fairness'])
  results['mia'] = {'attacks': list(attacks), 'reference_model': 'retrain_seed2', 'target': 'retrain',
                    'members': 120, 'nonmembers': 300}
  results['fairness'] = {'rule': 'median split', 'median_train_samples': 12.0, 'active_users': 40,
                         'inactive_users': 41, 'active_test_samples': 200, 'inactive_test_samples': 180}
  assert report.validate_results(results) == []
  report.write_report(str(tmp_path), results, order=('original', 'retrain', 'e2urec'))
  md = (tmp_path / 'results.md').read_text()
  mia_part = md.split('## Membership inference')[1].split('## Fairness')[0]
  e2urec_row = next(line for line in mia_part.splitlines() if line.startswith('| `e2urec`'))
  assert '0.6500 (+0.0500)' in e2urec_row  # the value beside its difference from retrain's
  retrain_row = next(line for line in mia_part.splitlines() if line.startswith('| `retrain`'))
  assert '0.6000' in retrain_row and '(+' not in retrain_row
  assert '`retrain_seed2`' in mia_part
  assert 'Median train samples per user 12.0' in md
  bad = copy.deepcopy(results)
  del bad['methods']['npo']['mia']['entropy']
  bad['methods']['npo']['fairness']['gap'] = 'wide'
  bad['fairness'] = {'rule': 3}
  assert set(report.validate_results(bad)) == {
      'methods.npo.mia.entropy: missing', "methods.npo.fairness.gap: expected a number or null, got 'wide'",
      'fairness: expected an object with "rule" (text) and "median_train_samples" (a number)'}

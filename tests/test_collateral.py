"""The report of a forget set of interactions (config.data.forget_unit): the deleted samples (the
forget set) and, apart, the same users' other samples ('collateral': retained train, test)."""
import os

import numpy as np
import pytest

from conftest import tiny_run_config
from e2urec_jax.eval import collateral, report, report_markdown, seed_report


def _row(sym_kl, retained_kl, test_kl, retained_auc=0.7, test_auc=0.6):
  return {'test': {'auc': 0.8, 'logloss': 0.5, 'acc': 0.7},
          'forget': {k: 0.1 for k in report.FORGET_KEYS} | {'sym_kl': sym_kl, 'jsd': sym_kl / 4},
          'collateral': {'retained': {'auc': retained_auc, 'sym_kl': retained_kl, 'samples': 30},
                         'test': {'auc': test_auc, 'sym_kl': test_kl, 'samples': 12}},
          'time_s': 10.0, 'unlearn_time_s': 10.0, 'compile_s': 1.0, 'trainable_params': 10,
          'trainable_fraction': 0.1, 'checkpoint_bytes': 100, 'peak_memory_bytes': None}


def _seed(e2u, badt):
  methods = {'original': _row(0.3, 0.01, 0.02), 'retrain': _row(0.0, 0.0, 0.0),
             'e2urec': _row(*e2u), 'badt': _row(*badt)}
  return {'methods': methods, 'noise_floor': None, 'trajectories': {}, 'config': {},
          'env': {'jax': 'x', 'devices': []}, 'forget_unit': 'category',
          'collateral': {'unit': 'category', 'users': 4, 'retained': 30, 'test': 12}}


def test_seeds_give_collateral_means_and_paired_intervals():
  per_seed = {1: _seed((0.10, 0.02, 0.03, 0.70), (0.20, 0.05, 0.06, 0.60)),
              2: _seed((0.12, 0.04, 0.05, 0.72), (0.18, 0.03, 0.09, 0.64)),
              3: _seed((0.08, 0.03, 0.04, 0.74), (0.22, 0.07, 0.06, 0.62))}
  results = seed_report.combine(per_seed)
  assert results['forget_unit'] == 'category' and results['collateral']['users'] == 4
  assert [p for p in report.validate_results(results) if not p.startswith('noise_floor')] == []
  e2u = results['methods']['e2urec']['collateral']
  assert e2u['retained']['sym_kl'] == pytest.approx(0.03) and e2u['retained']['auc'] == pytest.approx(0.72)
  c = results['summary']['collateral_comparisons']['badt']
  d = np.array([0.02 - 0.05, 0.04 - 0.03, 0.03 - 0.07])
  half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t_{0.975, 2}
  assert c['retained_sym_kl']['mean_diff'] == pytest.approx(d.mean())
  assert c['retained_sym_kl']['ci_low'] == pytest.approx(d.mean() - half)
  assert c['retained_sym_kl']['wins'] == 2
  assert c['retained_auc']['mean_diff'] == pytest.approx(np.mean([0.70 - 0.60, 0.72 - 0.64, 0.74 - 0.62]))
  assert c['test_sym_kl']['mean_diff'] == pytest.approx(np.mean([0.03 - 0.06, 0.05 - 0.09, 0.04 - 0.06]))
  md = report_markdown.markdown_report(report.plain(results), order=('original', 'retrain', 'e2urec', 'badt'))
  assert "## Deleted interactions and the same users' other samples (collateral)" in md
  line = next(x for x in md.splitlines() if x.startswith('| `e2urec` (3 seeds)') and '0.72' in x)
  assert '0.03 ± 0.01' in line  # retained symKL, mean ± std over the seeds
  assert '### The same, on the forget users\' other samples (collateral)' in md
  bad = report.plain(results)
  bad['methods']['badt']['collateral']['test'].pop('sym_kl')
  assert 'methods.badt.collateral.test.sym_kl: missing' in report.validate_results(bad)


def test_a_whole_user_report_has_no_collateral_section():
  results = seed_report.combine({1: _seed((0.1, 0.0, 0.0), (0.2, 0.0, 0.0))})
  for row in results['methods'].values():
    row.pop('collateral')
  results.pop('collateral')
  assert 'collateral' not in report_markdown.markdown_report(report.plain(results))


@pytest.mark.slow  # a tiny run: 30 s of CPU
def test_tiny_run_of_interactions_scores_the_deleted_and_the_collateral(tmp_path, monkeypatch):
  from e2urec_jax import runtime
  from e2urec_jax.experiment import run_experiment
  from e2urec_jax.methods import llmrec
  from e2urec_jax.train import context, paths
  config = tiny_run_config('ga')
  config.data.forget_unit = 'interactions'
  config.unlearn.ga.steps = 3
  config.eval.trajectory_every = 0
  config.eval.ranking_max_positives = 10
  trained_on = {}
  train_ce = llmrec.train_ce

  def recording(ctx, name, *, indices, **kw):
    trained_on[name] = np.asarray(indices)
    return train_ce(ctx, name, indices=indices, **kw)
  monkeypatch.setattr(llmrec, 'train_ce', recording)
  run_experiment(config, str(tmp_path))

  ctx = context.open_run(config, paths.run_paths(str(tmp_path)), read_only=True)
  train = ctx.data.splits['train']
  users = np.unique(train.user_id[train.is_forget])
  assert 0 < train.is_forget.sum() < np.isin(train.user_id, users).sum()  # part of each drawn user
  retained = np.flatnonzero(~train.is_forget)
  np.testing.assert_array_equal(np.sort(trained_on['retrain']), retained)  # without exactly the deleted ones
  rows = collateral.collateral_rows(ctx.data)
  assert len(rows['retained']) and np.isin(rows['retained'], trained_on['retrain']).all()

  results = runtime.read_json(os.path.join(tmp_path, 'results.json'))
  assert results['forget_unit'] == 'interactions' and results['config']['data']['forget_unit'] == 'interactions'
  assert results['collateral'] == {'unit': 'interactions', 'users': len(users), 'retained': len(rows['retained']),
                                   'test': len(rows['test'])}
  assert [p for p in report.validate_results(results) if not p.startswith('noise_floor')] == []
  for name in ('original', 'retrain', 'ga'):
    group = results['methods'][name]['collateral']
    for g in ('retained', 'test'):
      assert group[g]['samples'] == len(rows[g]) and group[g]['sym_kl'] >= 0, (name, g)
  assert results['methods']['retrain']['collateral']['retained']['sym_kl'] == 0.0
  assert results['methods']['original']['collateral']['retained']['sym_kl'] > 0.0
  md = open(os.path.join(tmp_path, 'results.md')).read()
  assert "Forget unit 'interactions'" in md and '| `ga` |' in md.split('(collateral)')[1]

"""Sweeps, ablations and seeds: the rows `run` adds to the report."""
import pytest

from conftest import load_config


def test_rows_expand_sweeps_ablations_and_seeds():
  from e2urec_jax.methods import runner
  config = load_config('configs/demo.py')
  config.unlearn.methods = 'e2urec,neggrad,sisa'
  config.sweep.alphas = '1,4'
  config.sweep.ws = '0.3'
  config.sweep.ablations = 'no_forget_teacher,no_remember_teacher'
  config.sweep.seeds = '7'
  rows = runner.rows(config)
  names = [r.name for r in rows]
  assert names == ['e2urec', 'neggrad', 'sisa', 'e2urec[alpha=1]', 'e2urec[alpha=4]', 'e2urec[w=0.3]',
                   'e2urec[no_forget_teacher]', 'e2urec[no_remember_teacher]', 'e2urec[seed=7]', 'neggrad[seed=7]']
  by_name = {r.name: r for r in rows}
  assert dict(by_name['e2urec[no_forget_teacher]'].overrides) == {'use_forget_teacher': False}
  assert by_name['e2urec[seed=7]'].seed == 7 and by_name['e2urec[alpha=4]'].overrides == (('alpha', 4.0),)
  section = runner.section_of(config, 'e2urec', by_name['e2urec[alpha=4]'].overrides)
  assert section.alpha == 4.0 and config.unlearn.e2urec.alpha == 2.0  # a copy: the config is untouched


def test_unknown_method_or_ablation_is_refused():
  from e2urec_jax.errors import UserError
  from e2urec_jax.methods import runner
  config = load_config('configs/demo.py')
  config.unlearn.methods = 'e2urec,forget_everything'
  with pytest.raises(UserError, match='unknown method'):
    runner.rows(config)
  config.unlearn.methods = 'e2urec'
  config.sweep.ablations = 'no_teachers'
  with pytest.raises(UserError, match='unknown'):
    runner.rows(config)


def test_seed_rows_fold_into_mean_and_spread():
  from e2urec_jax.eval.evaluate import merge_seed_rows
  methods = {'original': {'test': {'auc': 0.6}},
             'e2urec': {'test': {'auc': 0.70}, 'time_s': 1.0},
             'e2urec[seed=1]': {'test': {'auc': 0.80}, 'time_s': 3.0}}
  merged = merge_seed_rows(methods)
  assert list(merged) == ['original', 'e2urec']
  assert merged['e2urec']['test']['auc'] == pytest.approx(0.75)
  assert merged['e2urec']['time_s'] == pytest.approx(2.0)
  assert len(merged['e2urec']['seeds']) == 2

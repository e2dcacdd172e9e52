"""A run over several seeds: one seed's forget set redrawn exactly as `prepare` draws it, and the
combined report (means, paired comparisons, gap closed, cost, the retrain-free choice) against
values computed by hand."""
import dataclasses

import numpy as np
import pytest

from data_testing import tiny_config, write_ml100k
from e2urec_jax.data import movielens, protocol
from e2urec_jax.data.protocol import reseeded
from e2urec_jax.data.tokens import SplitArrays, TokenizedData
from e2urec_jax.eval import report, seed_report


@pytest.mark.parametrize('seed', [7, 11])
def test_seeded_assignment_is_what_prepare_draws(tmp_path, seed):
  write_ml100k(str(tmp_path), num_users=20, num_items=30, per_user=18)
  ratings = movielens.read_ml100k(str(tmp_path), pinned={}).ratings
  d = tiny_config('').data
  train = protocol.apply_protocol(ratings, d, seed=seed).samples['train']
  other = protocol.apply_protocol(ratings, d, seed=seed + 100)
  users, is_forget, sisa, receraser = protocol.seeded_assignment(train['user'].to_numpy(), d, seed)
  np.testing.assert_array_equal(is_forget, train['is_forget'].to_numpy())
  np.testing.assert_array_equal(sisa, train['sisa_shard'].to_numpy())
  np.testing.assert_array_equal(receraser, train['receraser_shard'].to_numpy())
  assert not np.array_equal(np.sort(users), np.sort(other.forget_users))  # another seed, other users


def test_reseeded_changes_the_forget_set_and_nothing_else(tmp_path):
  write_ml100k(str(tmp_path), num_users=20, num_items=30, per_user=18)
  ratings = movielens.read_ml100k(str(tmp_path), pinned={}).ratings
  d = tiny_config('').data
  train = protocol.apply_protocol(ratings, d, seed=1).samples['train']
  n = len(train)
  arrays = SplitArrays(prompt_ids=np.zeros((n, 4), np.int32), prompt_len=np.full(n, 4, np.int32),
                       label=np.zeros(n, np.int32), user_id=train['user'].to_numpy(), item_id=np.zeros(n, np.int64),
                       is_forget=train['is_forget'].to_numpy(), sisa_shard=train['sisa_shard'].to_numpy(),
                       receraser_shard=train['receraser_shard'].to_numpy())
  fields = {f.name: None for f in dataclasses.fields(TokenizedData)}
  fields.update(splits={'train': arrays}, forget_users=np.zeros(0))
  data = TokenizedData(**fields)
  again = reseeded(data, d, 5)
  expected = protocol.apply_protocol(ratings, d, seed=5).samples['train']
  np.testing.assert_array_equal(again.splits['train'].is_forget, expected['is_forget'].to_numpy())
  np.testing.assert_array_equal(again.splits["train"].prompt_ids, arrays.prompt_ids)
  assert data.splits['train'].is_forget is arrays.is_forget  # the original is untouched


def _row(sym_kl, jsd, auc, time_s):
  return {'test': {'auc': auc, 'logloss': 0.5, 'acc': 0.7},
          'forget': {k: 0.1 for k in report.FORGET_KEYS} | {'sym_kl': sym_kl, 'jsd': jsd},
          'time_s': time_s, 'unlearn_time_s': time_s, 'compile_s': 1.0, 'trainable_params': 10, 'trainable_fraction': 0.1,
          'checkpoint_bytes': 100, 'peak_memory_bytes': None}


def _seed(orig, e2u, badt, floor, e2u_auc=0.80):
  methods = {'original': _row(orig, orig / 5, 0.80, 50.0), 'retrain': _row(0.0, 0.0, 0.79, 40.0),
             'e2urec': _row(e2u, e2u / 5, e2u_auc, 10.0), 'badt': _row(badt, badt / 5, 0.78, 12.0)}
  return {'methods': methods, 'noise_floor': {'jsd': floor / 5, 'sym_kl': floor, 'l2': 0.1},
          'trajectories': {}, 'config': {}, 'env': {'jax': 'x', 'devices': []}}


def test_combined_report_by_hand(tmp_path):
  per_seed = {1: _seed(0.6, 0.4, 0.5, 0.2), 2: _seed(0.5, 0.3, 0.45, 0.1), 3: _seed(0.7, 0.5, 0.55, 0.15)}
  per_seed[2]['trajectories'] = {'2': {'e2urec': [
      {'step': 10, 'sym_kl': 0.5, 'heldout_mia_auc': 0.70}, {'step': 20, 'sym_kl': 0.2, 'heldout_mia_auc': 0.52},
      {'step': 30, 'sym_kl': 0.3, 'heldout_mia_auc': 0.49}]}}
  del per_seed[3]['methods']['badt']  # a method one seed did not run
  results = seed_report.combine(per_seed)
  assert results['seeds'] == [1, 2, 3]
  e2u = results['methods']['e2urec']
  assert e2u['forget']['sym_kl'] == pytest.approx(0.4) and [s['seed'] for s in e2u['seeds']] == [1, 2, 3]
  assert 'seed' not in e2u
  assert results['noise_floor']['sym_kl'] == pytest.approx(0.15)
  assert report.validate_results(results, required_methods=['e2urec', 'badt']) == []
  s = results['summary']
  c = s['comparisons']['badt']['sym_kl']  # paired over seeds 1 and 2 only: differences -0.1, -0.15
  assert c['n'] == 2 and c['mean_diff'] == pytest.approx(-0.125) and c['wins'] == 2
  half = 12.706204736 * np.std([-0.1, -0.15], ddof=1) / np.sqrt(2)
  assert c['ci_low'] == pytest.approx(-0.125 - half) and c['ci_high'] == pytest.approx(-0.125 + half)
  assert s['gap_closed']['e2urec']['sym_kl'] == pytest.approx((0.6 - 0.4) / (0.6 - 0.15))
  assert s['time_ratio']['e2urec'] == pytest.approx(10 / 40)
  assert s['time_ratio_no_compile']['e2urec'] == pytest.approx((10 - 1) / (40 - 1))  # 1 s compile each
  assert s['test_auc_vs_original']['mean_diff'] == pytest.approx(0.0)
  sel = s['selection']['e2urec']
  assert sel['best']['mean'] == pytest.approx(0.2) and sel['auto_step']['mean'] == 30  # |0.49-0.5| < |0.52-0.5|
  assert sel['final']['mean'] == pytest.approx(0.3)
  paths = report.write_report(str(tmp_path), results)
  text = open(paths['results.md']).read()
  assert '| `badt` | -0.125 |' in text and '2/2' in text
  assert 'noise floor | 0.2 | 0.1 | 0.15 |' in text
  assert '| `e2urec` | 0.444 | 0.444 | 0.25 | 0.231 |' in text  # gap closed, cost, cost compile aside
  with open(paths['trajectories.png'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_the_summary_compares_every_method_with_the_featured_one(monkeypatch):
  """The method the claims are about is the one its spec declares featured (MethodSpec.featured), not a name
  the report knows: declared on Bad-T, the paired comparisons are Bad-T's against the others."""
  from e2urec_jax.train import registry
  per_seed = {1: _seed(0.6, 0.4, 0.5, 0.2), 2: _seed(0.5, 0.3, 0.45, 0.1)}
  assert registry.featured() == 'e2urec' and set(seed_report.combine(per_seed)['summary']['comparisons']) == {
      'original', 'badt'}
  monkeypatch.setattr(registry, 'featured', lambda: 'badt')
  s = seed_report.combine(per_seed)['summary']
  assert set(s['comparisons']) == {'original', 'e2urec'}
  assert s['comparisons']['e2urec']['sym_kl']['mean_diff'] == pytest.approx(0.125)  # Bad-T - E2URec, per seed


def test_a_second_featured_method_is_refused():
  import dataclasses
  from e2urec_jax.methods import neggrad, spec
  with pytest.raises(ValueError, match="'copy': featured, but 'e2urec' is featured already"):
    spec.register(dataclasses.replace(neggrad.SPEC, name='copy', featured=True))
  assert 'copy' not in spec.names()


def test_auto_step_skips_unscored_points():
  points = [{'step': 5, 'sym_kl': 1.0, 'heldout_mia_auc': None}, {'step': 9, 'sym_kl': 0.5, 'heldout_mia_auc': 0.6}]
  assert seed_report.auto_step(points)['step'] == 9
  assert seed_report.auto_step([{'step': 1, 'sym_kl': 1.0, 'heldout_mia_auc': float('nan')}]) == {}

"""Ranking metrics (eval/ranking.py, eval/metrics.py): HR@k, NDCG@k, ties, the draws, a tiny run."""
import math
import os

import numpy as np
import pytest

from conftest import tiny_scored_run_config
from e2urec_jax.eval import metrics, ranking


def test_ranks_hr_and_ndcg_by_hand():
  # Column 0 is the positive. Ties are pessimistic: the positive ranks below equal-scored negatives.
  scores = np.array([
      [0.9, 0.1, 0.2, 0.3],  # best: rank 1
      [0.5, 0.5, 0.1, 0.2],  # tied with one negative: rank 2 (not 1)
      [0.2, 0.9, 0.8, 0.7],  # worst: rank 4
      [0.4, 0.4, 0.4, 0.4],  # every candidate alike: last, rank 4
      [0.3, 0.6, np.nan, 0.1],  # one negative missing: rank 2 among 3
      [np.nan, 0.1, 0.2, 0.3],  # no score for the positive: last
  ])
  ranks = metrics.positive_ranks(scores)
  assert ranks.tolist() == [1, 2, 4, 4, 2, 4]
  assert metrics.hit_rate(ranks, 1) == pytest.approx(1 / 6)
  assert metrics.hit_rate(ranks, 2) == pytest.approx(3 / 6)
  assert metrics.hit_rate(ranks, 4) == 1.0
  # NDCG@2: 1/log2(2) = 1 for rank 1, 1/log2(3) for the two rank-2 positives, 0 beyond k.
  assert metrics.ndcg(ranks, 2) == pytest.approx((1 + 2 / math.log2(3)) / 6)
  assert metrics.ndcg(ranks, 4) == pytest.approx((1 + 2 / math.log2(3) + 3 / math.log2(5)) / 6)
  assert math.isnan(metrics.hit_rate([], 10)) and math.isnan(metrics.ndcg([], 10))
  entry = ranking.ranking_entry(scores, 2, 3)
  assert entry == {'k': 2, 'negatives': 3, 'positives': 6, 'hr': pytest.approx(0.5),
                   'ndcg': pytest.approx((1 + 2 / math.log2(3)) / 6)}


def test_draws_are_keyed_unrated_and_stable():
  rated = {0: np.array([1, 2, 3]), 1: np.arange(0, 20, 2), 2: np.arange(18)}
  pool = np.arange(20)
  users, items = np.array([0, 1, 2]), np.array([1, 2, 3])
  neg = ranking.draw_negatives(users, items, lambda u: rated[u], pool, 5)
  assert neg.shape == (3, 5)
  for row, u in zip(neg, users):
    present = row[row >= 0]
    assert len(set(present.tolist())) == len(present)  # distinct
    assert not np.isin(present, rated[u]).any()  # never rated by the user
  assert sorted(neg[2].tolist()) == [-1, -1, -1, 18, 19]  # only two unrated items: the rest missing
  # The same (user, item) gets the same negatives whatever else is drawn with it.
  again = ranking.draw_negatives(users[::-1], items[::-1], lambda u: rated[u], pool, 5)
  np.testing.assert_array_equal(again[::-1], neg)
  # Positives: label 1 only; a capped subset that does not depend on the rows around it.
  u, i = np.arange(100) % 7, np.arange(100)
  label = (np.arange(100) % 3 != 0).astype(np.int32)
  chosen = ranking.select_positives(u, i, label, np.arange(100), 10)
  assert len(chosen) == 10 and (label[chosen] == 1).all() and (np.diff(chosen) > 0).all()
  assert ranking.select_positives(u, i, label, np.arange(100), 0).tolist() == np.flatnonzero(label).tolist()
  within = ranking.select_positives(u, i, label, np.arange(100), 10_000)
  assert len(within) == int(label.sum())
  # Removing rows that were not chosen leaves the choice as it was.
  kept = np.union1d(chosen, np.arange(0, 100, 5))
  assert ranking.select_positives(u, i, label, kept, 10).tolist() == chosen.tolist()


def test_config_fields_and_rules():
  from e2urec_jax import config as config_lib
  from e2urec_jax.errors import UserError
  c = config_lib.default_config()
  assert (c.eval.ranking_negatives, c.eval.ranking_k, c.eval.ranking_max_positives) == (19, 10, 200)
  for field, bad in (('ranking_negatives', -1), ('ranking_k', 0), ('ranking_max_positives', -3)):
    c = config_lib.default_config()
    c.eval[field] = bad
    with pytest.raises(UserError, match=f'eval.{field}'):
      config_lib.validate(c)


@pytest.mark.slow  # 14 s: the fast tier stays under 90 s on a cold cache
def test_tiny_run_ranks_every_model_on_the_same_candidates(tmp_path):
  from e2urec_jax import runtime
  from e2urec_jax.eval import report
  from e2urec_jax.experiment import run_experiment
  from e2urec_jax.train import context, paths
  from e2urec_jax.train.inference import load_predictor
  config = tiny_scored_run_config()
  run_experiment(config, str(tmp_path))
  results = runtime.read_json(os.path.join(tmp_path, 'results.json'))
  assert [p for p in report.validate_results(results) if not p.startswith('noise_floor')] == []  # no floor here
  methods = results['methods']
  assert list(methods) == ['original', 'retrain', 'e2urec', 'neggrad']
  for name, row in methods.items():
    for group in ('test', 'forget'):
      entry = row[group]['ranking']
      assert entry['k'] == 10 and entry['negatives'] == 19 and 0 < entry['positives'] <= 15, (name, group)
      assert 0.0 <= entry['hr'] <= 1.0 and 0.0 <= entry['ndcg'] <= entry['hr'], (name, group, entry)
  info = results['ranking']
  assert info['positives'] == {g: methods['original'][g]['ranking']['positives'] for g in ('test', 'forget')}
  md = open(os.path.join(tmp_path, 'results.md')).read()
  assert 'test HR@10' in md and 'forget NDCG@10' in md

  ctx = context.open_run(config, paths.run_paths(str(tmp_path)), read_only=True)
  built = ranking.build(ctx)
  ranking._CACHE.clear()  # drawn again from nothing: the same lists
  fresh = ranking.build(ctx)
  data = ctx.data
  for group, (split, _, rows) in ranking.set_rows(ctx).items():
    a, b = built[group], fresh[group]
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.arrays.prompt_ids, b.arrays.prompt_ids)
    # Each distinct prompt is scored once: the candidate's own prompt is the one scored for it.
    np.testing.assert_array_equal(a.arrays.prompt_ids[a.unique][a.prompt_of], a.arrays.prompt_ids)
    assert len(np.unique(a.arrays.prompt_ids[a.unique], axis=0)) == len(a.unique)
    arrays = data.splits[split]
    # Column 0 is a positive of the set; the others are items that user never rated.
    at = {(int(u), int(i)): r for r, u, i in zip(rows, arrays.user_id[rows], arrays.item_id[rows])}
    positives = [at[(int(u), int(i))] for u, i in zip(a.users, a.items[:, 0])]
    assert (arrays.label[positives] == 1).all()
    assert len(a.users) == info['positives'][group]
    # The positive's own candidate prompt is its stored prompt, token for token.
    first = a.slots % a.items.shape[1] == 0
    np.testing.assert_array_equal(a.arrays.prompt_ids[first], arrays.prompt_ids[positives])
    # A negative's prompt differs from its positive's only where the item's title is.
    own = np.asarray(positives)[a.slots[~first] // a.items.shape[1]]
    assert (a.arrays.prompt_ids[~first] != arrays.prompt_ids[own]).any(axis=1).all()
    assert (a.arrays.item_id[~first] == a.items.reshape(-1)[a.slots[~first]]).all()
  # Every model is scored on exactly these lists: measuring again with the cache rebuilt gives the run's values.
  again = ranking.measure(ctx, fresh, load_predictor(ctx, 'e2urec'))
  for group in ('test', 'forget'):
    assert again[group]['hr'] == pytest.approx(methods['e2urec'][group]['ranking']['hr'])
    assert again[group]['ndcg'] == pytest.approx(methods['e2urec'][group]['ranking']['ndcg'])


def test_report_shows_validates_and_averages_ranking(tmp_path):
  from test_report import synthetic_results
  from e2urec_jax.eval import report, seed_report
  results = synthetic_results()
  plain = report.markdown_report(results)
  assert 'HR@' not in plain  # files without ranking read as before
  seeds = {}
  for seed, hr in ((1, 0.2), (2, 0.4)):
    per = synthetic_results()
    for row in per['methods'].values():
      row.pop('seeds', None)
      for group in ('test', 'forget'):
        row[group]['ranking'] = {'k': 5, 'negatives': 19, 'positives': 100 + seed, 'hr': hr, 'ndcg': hr / 2}
    per['ranking'] = {'k': 5, 'negatives': 19, 'max_positives': 200, 'positives': {'test': 100, 'forget': 90}}
    assert report.validate_results(per) == []
    seeds[seed] = per
  combined = seed_report.combine(seeds)
  assert report.validate_results(combined) == [] and combined['ranking']['negatives'] == 19
  entry = combined['methods']['e2urec']['test']['ranking']
  assert entry['hr'] == pytest.approx(0.3) and entry['ndcg'] == pytest.approx(0.15) and entry['k'] == 5
  md = report.markdown_report(combined)
  assert '| test HR@5 | test NDCG@5 | forget HR@5 | forget NDCG@5 |' in md and 'among 19 items' in md
  assert '0.3000 ± 0.1414' in md
  bad = seeds[1]
  bad['methods']['e2urec']['forget']['ranking']['hr'] = 'high'
  assert report.validate_results(bad) == ["methods.e2urec.forget.ranking.hr: expected a number or null, got 'high'"]

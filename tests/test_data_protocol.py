"""The sample protocol against an independent recomputation on a small file."""
import numpy as np
import pandas as pd
import pytest

from data_testing import independent_protocol, tiny_config, write_ml100k
from e2urec_jax.data import movielens, protocol
from e2urec_jax.errors import UserError


@pytest.fixture
def small(tmp_path):
  rows = write_ml100k(str(tmp_path), num_users=20, num_items=30, per_user=18, ties=True)
  ratings = movielens.read_ml100k(str(tmp_path), pinned={}).ratings
  return rows, ratings


@pytest.mark.parametrize('num_samples', [1000, 150])
def test_counts_and_histories_match_independent_recomputation(small, num_samples):
  rows, ratings = small
  d = tiny_config('').data
  d.num_samples = num_samples
  out = protocol.apply_protocol(ratings, d, seed=42)
  want = independent_protocol(rows, min_history=d.min_history, history_k=d.history_k,
                              num_samples=num_samples, split=d.split, threshold=d.label_threshold)
  for name in protocol.SPLITS:
    got = out.samples[name]
    assert len(got) == len(want[name]), name
    assert list(zip(got['user'], got['item'], got['label'])) == [(u, i, y) for u, i, y, _, _ in want[name]]
    assert [list(h) for h in got['history_items']] == [h for _, _, _, h, _ in want[name]]
  total = sum(len(v) for v in want.values())
  assert total == min(num_samples, len(rows) - 20 * d.min_history)


def test_time_order_and_no_leak_into_history(small):
  _, ratings = small
  d = tiny_config('').data
  out = protocol.apply_protocol(ratings, d, seed=1)
  ordered = ratings.sort_values(['timestamp', 'user', 'item'], kind='stable').reset_index(drop=True)
  position = {(u, i): k for k, (u, i) in enumerate(zip(ordered['user'], ordered['item']))}
  last = -1
  for name in protocol.SPLITS:
    s = out.samples[name]
    keys = list(zip(s['timestamp'], s['user'], s['item']))
    assert keys == sorted(keys)  # time order inside a split
    assert s['order'].iloc[0] > last  # and across splits
    last = s['order'].iloc[-1]
    for user, item, hist, hist_len in zip(s['user'], s['item'], s['history_items'], s['history_len']):
      own = position[(user, item)]
      assert item not in hist
      assert all(position[(user, h)] < own for h in hist)  # only earlier ratings of the same user
      assert len(hist) == min(hist_len, d.history_k) and hist_len >= d.min_history


def test_forget_set_is_exactly_the_chosen_users_train_samples(small):
  _, ratings = small
  d = tiny_config('').data
  out = protocol.apply_protocol(ratings, d, seed=7)
  train = out.samples['train']
  train_users = np.unique(train['user'])
  expected = np.sort(np.random.default_rng(7).choice(train_users, int(round(0.2 * len(train_users))), replace=False))
  np.testing.assert_array_equal(out.forget_users, expected)
  assert set(train.loc[train['is_forget'], 'user']) == set(expected)
  assert not set(train.loc[~train['is_forget'], 'user']) & set(expected)
  assert train['is_forget'].sum() == train['user'].isin(expected).sum()
  again = protocol.apply_protocol(ratings, d, seed=7)  # seeded: the same draw
  np.testing.assert_array_equal(again.forget_users, out.forget_users)


def test_shards_disjoint_covering_and_receraser_user_disjoint(small):
  _, ratings = small
  d = tiny_config('').data
  d.num_shards = 3
  train = protocol.apply_protocol(ratings, d, seed=3).samples['train']
  sisa = train['sisa_shard'].to_numpy()
  assert set(sisa) == {0, 1, 2}  # one label per row: disjoint and covering by construction; check balance
  assert np.bincount(sisa).max() - np.bincount(sisa).min() <= 1
  rec = train['receraser_shard'].to_numpy()
  assert set(rec) == {0, 1, 2}
  assert (train.groupby('user')['receraser_shard'].nunique() == 1).all()  # user-disjoint
  sizes = np.bincount(rec)
  biggest_user = train['user'].value_counts().max()
  assert sizes.max() - sizes.min() <= biggest_user  # greedy balance bound


def test_receraser_balances_by_count():
  users = np.repeat(np.arange(8), [10, 9, 8, 7, 3, 2, 2, 1])
  shard = protocol.receraser_shards(users, 2, seed=0)
  assert sorted(np.bincount(shard).tolist()) == [21, 21]


def test_bad_settings_are_user_errors(small):
  _, ratings = small
  for bad in (0.0, 1.0, -0.1, 1.5):
    d = tiny_config('').data
    d.forget_fraction = bad
    with pytest.raises(UserError, match='forget_fraction'):
      protocol.apply_protocol(ratings, d, seed=0)
  d = tiny_config('').data
  d.forget_fraction = 0.01  # 1% of ~12 train users rounds to nobody
  with pytest.raises(UserError, match='empty forget set'):
    protocol.apply_protocol(ratings, d, seed=0)
  d = tiny_config('').data
  d.split = (0.5, 0.5, 0.5)
  with pytest.raises(UserError, match='split'):
    protocol.apply_protocol(ratings, d, seed=0)
  d = tiny_config('').data
  d.min_history = 100
  with pytest.raises(UserError, match='too few'):
    protocol.apply_protocol(ratings, d, seed=0)


def test_ties_in_time_are_ordered_by_user_then_item():
  ratings = pd.DataFrame({'user': [2, 1, 1, 1, 2, 2], 'item': [5, 9, 3, 4, 1, 2], 'rating': [5.0] * 6,
                          'timestamp': [10, 10, 10, 10, 10, 10]})
  s = protocol.build_samples(ratings, history_k=5, min_history=2, num_samples=10, label_threshold=3)
  # order: (1,3) (1,4) (1,9) (2,1) (2,2) (2,5)
  assert list(zip(s['user'], s['item'])) == [(1, 9), (2, 5)]
  assert [list(h) for h in s['history_items']] == [[3, 4], [1, 2]]


def test_forget_selection_core_and_edge_take_the_most_and_least_active_users(small):
  _, ratings = small
  chosen = {}
  for selection in protocol.SELECTIONS:
    d = tiny_config('').data
    d.forget_selection = selection
    out = protocol.apply_protocol(ratings, d, seed=5)
    train = out.samples['train']
    counts = train['user'].value_counts()
    chosen[selection] = set(out.forget_users.tolist())
    assert len(out.forget_users) == int(round(0.2 * len(counts)))  # the same number of users whatever the rule
    assert set(train.loc[train['is_forget'], 'user']) == chosen[selection]
    inside, outside = counts[list(chosen[selection])], counts.drop(list(chosen[selection]))
    if selection == 'core':
      assert inside.min() >= outside.max()
    elif selection == 'edge':
      assert inside.max() <= outside.min()
  d = tiny_config('').data
  np.testing.assert_array_equal(  # 'random' is the draw it always was
      sorted(chosen['random']), protocol.choose_forget_users(
          protocol.apply_protocol(ratings, d, seed=5).samples['train']['user'], 0.2, 5))


def test_forget_selection_by_hand_and_its_rule():
  rows = np.repeat([10, 11, 12, 13, 14], [5, 1, 3, 3, 9])  # samples per user: 5, 1, 3, 3, 9
  assert protocol.choose_forget_users(rows, 0.4, seed=0, selection='core').tolist() == [10, 14]
  assert protocol.choose_forget_users(rows, 0.2, seed=0, selection='edge').tolist() == [11]
  ties = {tuple(protocol.choose_forget_users(rows, 0.4, seed=s, selection='edge')) for s in range(20)}
  assert ties == {(11, 12), (11, 13)}  # the tie between 12 and 13 is broken by the seed, both ways
  with pytest.raises(UserError, match='forget_selection'):
    protocol.choose_forget_users(rows, 0.4, seed=0, selection='active')
  from e2urec_jax import config as config_lib
  c = config_lib.default_config()
  c.data.forget_selection = 'active'
  with pytest.raises(UserError, match=r"config.data.forget_selection='active': must be one of 'random', 'core'"):
    config_lib.validate(c)


def test_prepared_data_is_keyed_by_a_non_default_selection_only():
  from e2urec_jax import config as config_lib
  from e2urec_jax.data.prepare import config_key
  c = config_lib.default_config()
  assert 'forget_selection' not in config_key(c)['data']  # data prepared before the field existed still fits
  c.data.forget_selection = 'core'
  assert config_key(c)['data']['forget_selection'] == 'core'  # another forget set: prepared again


def test_forget_selection_needs_the_default_protocol():
  from e2urec_jax import config as config_lib
  c = config_lib.default_config()
  c.data.forget_selection, c.data.protocol = 'edge', 'paper'
  with pytest.raises(UserError, match=r"config.data.forget_selection='edge' needs config.data.protocol='default'"):
    config_lib.validate(c)
  with pytest.raises(UserError, match='needs config.data.protocol'):
    protocol.check_config(c.data)


def test_profile_zip_needs_a_movielens_profile_and_the_default_protocol():
  from e2urec_jax import config as config_lib
  c = config_lib.default_config()
  c.data.profile_zip, c.data.protocol = True, 'paper'
  with pytest.raises(UserError, match=r"config.data.profile_zip=True needs a MovieLens profile .*protocol 'paper'"):
    config_lib.validate(c)
  c.data.protocol, c.data.source = 'default', 'goodreads'
  with pytest.raises(UserError, match=r"profile_zip=True needs a MovieLens profile .*source 'goodreads'.*False"):
    config_lib.validate(c)
  c.data.source = 'ml-100k'
  config_lib.validate(c)


def test_profile_zip_is_recorded_only_when_on():
  """Data prepared and phases trained before the field existed stay valid (retrained: nothing)."""
  from e2urec_jax import config as config_lib
  from e2urec_jax.data.prepare import config_key
  from e2urec_jax.train import fingerprint
  c = config_lib.default_config()
  assert 'profile_zip' not in config_key(c)['data']
  assert 'data.profile_zip' not in fingerprint.fields(c, fingerprint.RECIPE)
  off = {'fields': fingerprint.fields(c, fingerprint.RECIPE)}
  c.data.profile_zip = True
  assert config_key(c)['data']['profile_zip'] is True  # other prompts: prepared again
  on = {'fields': fingerprint.fields(c, fingerprint.RECIPE)}
  assert on['fields']['data.profile_zip'] is True
  keys = fingerprint.changed_keys(on, off)
  assert keys == ['data.profile_zip']
  assert fingerprint.describe(on, off, keys) == 'data.profile_zip true -> false'  # the refusal names the value
  assert fingerprint.describe({'fields': {'data.forget_selection': 'core'}}, {'fields': {}},
                              ['data.forget_selection']) == 'data.forget_selection "core" -> "random"'


def test_predict_reads_a_synthetic_workdirs_profiles_as_prepare_did(tmp_path):
  """predict builds prompts from the workdir's own copy of synthetic data: with the same profile
  settings as the prepared data (a zip code in training and none at prediction would be another prompt)."""
  import pandas as pd
  from e2urec_jax import config as config_lib
  from e2urec_jax.data import read_source, synthetic
  from e2urec_jax.eval.predict import pair_prompts
  c = config_lib.default_config()
  c.data.profile_zip = True
  c.data.synthetic.num_users, c.data.synthetic.num_items = 20, 30
  prepared = read_source(c, str(tmp_path / 'scratch')).users.set_index('key')['profile']
  synthetic.generate(c.data.synthetic, int(c.data.synthetic.seed), str(tmp_path / 'work' / 'data' / 'synthetic'))
  pairs = pd.DataFrame({'user_id': ['3', '7'], 'item_id': ['1', '2']})
  prompts, _ = pair_prompts(c, pairs, str(tmp_path / 'scratch2'), workdir=str(tmp_path / 'work'))
  assert prompts['profile'].tolist() == [prepared['3'], prepared['7']]
  assert ' zip code is ' in prompts['profile'][0]

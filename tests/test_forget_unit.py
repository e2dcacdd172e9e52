"""config.data.forget_unit: the forget set as a draw of interactions (a share of some users' train
samples, or their samples of one item category) instead of whole users; the retain set keeps the
users' other samples."""
import dataclasses

import numpy as np
import pytest

from data_testing import tiny_config, write_ml100k
from e2urec_jax import config as config_lib
from e2urec_jax import seeds
from e2urec_jax.data import movielens, protocol
from e2urec_jax.data.protocol import reseeded
from e2urec_jax.data.tokens import SplitArrays, TokenizedData
from e2urec_jax.errors import UserError
from e2urec_jax.methods.common import split_indices


def _raw(tmp_path):
  write_ml100k(str(tmp_path), num_users=20, num_items=30, per_user=18)
  return movielens.read_ml100k(str(tmp_path), pinned={})


def _train(raw, seed, **data):
  d = tiny_config('', **data).data
  splits = protocol.apply_protocol(raw.ratings, d, seed, protocol.item_categories(raw.items))
  return splits, splits.samples['train']


def test_interaction_draw_takes_the_share_of_each_drawn_user_seeded(tmp_path):
  raw = _raw(tmp_path)
  whole, _ = _train(raw, 7)
  splits, train = _train(raw, 7, forget_unit='interactions', forget_interaction_share=0.3)
  users, forget = train['user'].to_numpy(), train['is_forget'].to_numpy()
  np.testing.assert_array_equal(splits.forget_users, whole.forget_users)  # the same users as forget_unit='user'
  rng = np.random.default_rng(seeds.derive(7, 'data', 'forget_draw'))  # the draw inside them: its own stream
  expected = np.zeros(len(users), bool)
  for u in whole.forget_users:
    rows = np.flatnonzero(users == u)
    count = min(len(rows), max(1, int(round(0.3 * len(rows)))))
    assert forget[rows].sum() == count and count < len(rows)  # the share, and the user keeps the rest
    expected[rng.choice(rows, count, replace=False)] = True
  np.testing.assert_array_equal(forget, expected)
  assert not forget[~np.isin(users, whole.forget_users)].any()
  _, again = _train(raw, 7, forget_unit='interactions', forget_interaction_share=0.3)
  np.testing.assert_array_equal(again['is_forget'].to_numpy(), forget)
  _, other = _train(raw, 8, forget_unit='interactions', forget_interaction_share=0.3)
  assert not np.array_equal(other['is_forget'].to_numpy(), forget)


def test_category_draw_deletes_every_sample_of_one_category_per_user(tmp_path):
  raw = _raw(tmp_path)
  splits, train = _train(raw, 7, forget_unit='category')
  categories = protocol.item_categories(raw.items)
  users, items, forget = (train[c].to_numpy() for c in ('user', 'item', 'is_forget'))
  assert len(splits.forget_users) and forget.any()
  for u in splits.forget_users:
    rows = np.flatnonzero(users == u)
    deleted = {c for i in items[rows][forget[rows]] for c in categories[int(i)]}
    assert len(deleted) == 1  # one genre (these items have one each)
    genre = deleted.pop()
    np.testing.assert_array_equal(forget[rows], [genre in categories[int(i)] for i in items[rows]])
    assert not forget[rows].all()  # a category that is only part of the user's samples
  assert not forget[~np.isin(users, splits.forget_users)].any()


def test_category_of_an_item_with_two_genres_deletes_it_with_either():
  d = tiny_config('', forget_unit='category').data
  users, items = np.ones(6, np.int64), np.arange(1, 7)
  categories = {1: ('A',), 2: ('A', 'B'), 3: ('B',), 4: ('C',), 5: ('C',), 6: ('A', 'C')}
  drawn = set()
  for seed in range(30):
    forget = protocol.forget_rows(users, [1], d, seed, items, categories)
    genre = next(g for g in 'ABC' if list(forget) == [g in categories[int(i)] for i in items])
    drawn.add(genre)
  assert drawn == {'A', 'B', 'C'}
  with pytest.raises(UserError, match='has a category'):
    protocol.forget_rows(users, [1], d, 0, items, {i: () for i in range(1, 7)})


def test_the_retain_set_keeps_the_users_other_samples(tmp_path):
  raw = _raw(tmp_path)
  splits, train = _train(raw, 7, forget_unit='category')
  n = len(train)
  arrays = SplitArrays(prompt_ids=np.zeros((n, 4), np.int32), prompt_len=np.full(n, 4, np.int32),
                       label=np.zeros(n, np.int32), user_id=train['user'].to_numpy(),
                       item_id=train['item'].to_numpy(), is_forget=train['is_forget'].to_numpy(),
                       sisa_shard=train['sisa_shard'].to_numpy(), receraser_shard=train['receraser_shard'].to_numpy())
  fields = {f.name: None for f in dataclasses.fields(TokenizedData)}
  fields.update(splits={'train': arrays}, forget_users=splits.forget_users,
                item_categories=protocol.item_categories(raw.items))
  data = TokenizedData(**fields)
  retain, forget = split_indices(data)  # what the retrained model and every method read
  np.testing.assert_array_equal(forget, np.flatnonzero(train['is_forget'].to_numpy()))
  np.testing.assert_array_equal(np.sort(np.r_[retain, forget]), np.arange(n))
  kept = retain[np.isin(arrays.user_id[retain], splits.forget_users)]
  assert len(kept) > 0  # the forget users' other samples are retained
  d = tiny_config('', forget_unit='category').data
  again = reseeded(data, d, 5)  # another seed of a run draws with the recorded categories
  _, expected = _train(raw, 5, forget_unit='category')
  np.testing.assert_array_equal(again.splits['train'].is_forget, expected['is_forget'].to_numpy())


def test_forget_unit_settings_are_checked():
  c = config_lib.default_config()
  c.data.forget_unit = 'pages'
  with pytest.raises(UserError, match='forget_unit'):
    config_lib.validate(c)
  c = config_lib.default_config()
  c.data.forget_unit, c.data.protocol = 'interactions', 'paper'
  with pytest.raises(UserError, match="needs config.data.protocol='default'"):
    config_lib.validate(c)
  c = config_lib.default_config()
  c.data.forget_interaction_share = 1.0
  with pytest.raises(UserError, match='forget_interaction_share'):
    config_lib.validate(c)


def test_sequence_refuses_a_partial_forget_unit(tmp_path):
  from e2urec_jax.sequence import run_sequence
  c = config_lib.default_config()
  c.data.forget_unit = 'interactions'
  with pytest.raises(UserError, match='sequence serves requests of whole users'):
    run_sequence(c, str(tmp_path))

"""The sample protocol (ReLLa / E2URec original code): samples, splits, forget set, shards.

1. label = rating > label_threshold;
2. all ratings in global order by (timestamp, user, item); a sample's history is the
   same user's earlier ratings in that order (never its own, never a later one);
3. samples with >= min_history earlier ratings are kept; the prompt shows the
   history_k most recent (oldest of them first);
4. the last num_samples samples in global order are split in time order into
   train/valid/test by config.data.split;
5. the seed's draws over the train split (`seeded_assignment`): the forget users (the forget
   set is all their train samples, retain the rest), SISA's shards and RecEraser's shards.
   config.data.forget_selection picks who is forgotten (protocol 'default' only): 'random'
   draws them as below; 'core' takes the round(forget_fraction * #train users) users with the
   most train samples, 'edge' those with the fewest (ties in default_rng([seed, 3]) order).
   config.data.forget_unit says what of those users is deleted (`forget_rows`): 'user' all their
   train samples; 'interactions' a share (forget_interaction_share) of each one's train samples;
   'category' each one's train samples of one item category (a genre of the item table, drawn per
   user among the categories that hold some but not all of that user's train samples). The draw
   inside the users is seeded by seeds.derive(seed, 'data', 'forget_draw').

Steps 1-4 are the original code's (data_preprocess/ml-1m.ipynb, split_ml-1m.ipynb). Step 5 and
the split counts follow config.data.protocol:
- 'default': round(N*f_train), round(N*f_valid) samples, the rest; round(forget_fraction *
  #train users) forget users drawn with numpy default_rng(seed); SISA: the train samples dealt
  into num_shards equal random shards (default_rng([seed, 1])); RecEraser: train users into
  num_shards user-disjoint shards balanced by sample count (largest user first into the
  lightest shard, ties in default_rng([seed, 2]) order).
- 'paper': exactly the original code's draws (split_ml-1m.ipynb): int(N*f_train) and
  int(N*(f_train+f_valid)) split bounds; the train users in order of first appearance,
  shuffled by Python's `random.seed(seed); random.shuffle(...)`, the first
  int(forget_fraction * #users) forget; SISA: each sample's shard drawn independently,
  `np.random.seed(seed); np.random.choice(range(num_shards), size)` (the original draws it over
  the whole pool of train+valid+test; the train rows come first and legacy numpy draws one
  value after the other, so drawing over train alone gives the same shards); RecEraser: the
  retain users of that shuffled order cut into num_shards consecutive chunks
  (retain[int(R*k/S):int(R*(k+1)/S)]). The original trains RecEraser's shards on retain users
  only; here shard k also holds the k-th chunk of the forget users, cut the same way, so the
  shard models retrained without the forget set are the original's and every shard is affected.
Pure numpy/pandas: the tests recompute all of it independently.
"""
import dataclasses
import random

import numpy as np
import pandas as pd

from e2urec_jax import seeds
from e2urec_jax.data import tokens
from e2urec_jax.errors import UserError

SPLITS = ('train', 'valid', 'test')
PROTOCOLS = ('default', 'paper')  # config.data.protocol
SELECTIONS = ('random', 'core', 'edge')  # config.data.forget_selection: any users, the most active, the least active
UNITS = ('user', 'interactions', 'category')  # config.data.forget_unit: what of a drawn user is deleted


@dataclasses.dataclass
class Splits:
  """Samples per split. Columns: user, item, rating, timestamp, label, order (position in the
  global rating order), history_len (all earlier ratings), history_items / history_ratings
  (the shown ones, oldest first); train also is_forget, sisa_shard, receraser_shard."""
  samples: dict
  forget_users: np.ndarray  # sorted user ids


def check_config(d) -> None:
  """UserErrors for protocol settings that cannot work."""
  if not 0.0 < float(d.forget_fraction) < 1.0:
    raise UserError(f'config.data.forget_fraction={d.forget_fraction} must be strictly between 0 and 1')
  split = tuple(float(x) for x in d.split)
  if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1.0) > 1e-6:
    raise UserError(f'config.data.split={tuple(d.split)} must be three positive fractions that sum to 1')
  if int(d.num_shards) < 1:
    raise UserError(f'config.data.num_shards={d.num_shards} must be >= 1')
  if int(d.min_history) < 0 or int(d.history_k) < 0:
    raise UserError('config.data.min_history and config.data.history_k must be >= 0')
  if protocol_of(d) not in PROTOCOLS:
    raise UserError(f'config.data.protocol={protocol_of(d)!r} must be one of {", ".join(PROTOCOLS)}')
  if selection_of(d) not in SELECTIONS:
    raise UserError(f'config.data.forget_selection={selection_of(d)!r} must be one of {", ".join(SELECTIONS)}')
  if selection_of(d) != 'random' and protocol_of(d) == 'paper':
    raise UserError(f"config.data.forget_selection={selection_of(d)!r} needs config.data.protocol='default' "
                    "(the paper's draws are random); set one of them back")
  if int(d.num_samples) < 3:
    raise UserError(f'config.data.num_samples={d.num_samples} must be >= 3 (one per split at least)')
  if unit_of(d) not in UNITS:
    raise UserError(f'config.data.forget_unit={unit_of(d)!r} must be one of {", ".join(UNITS)}')
  if unit_of(d) != 'user' and protocol_of(d) == 'paper':
    raise UserError(f"config.data.forget_unit={unit_of(d)!r} needs config.data.protocol='default' (the paper's "
                    "draws forget whole users); set one of them back")


def build_samples(ratings: pd.DataFrame, *, history_k: int, min_history: int, num_samples: int,
                  label_threshold: float) -> pd.DataFrame:
  """Steps 1-4 up to the split: the last `num_samples` samples with their shown history."""
  order = np.lexsort((ratings['item'].to_numpy(), ratings['user'].to_numpy(), ratings['timestamp'].to_numpy()))
  r = ratings.iloc[order].reset_index(drop=True)
  user = r['user'].to_numpy()
  n = len(r)
  # Rows grouped by user, time order inside each group: row j sits at by_user_pos[j].
  by_user = np.lexsort((np.arange(n), user))
  by_user_pos = np.empty(n, np.int64)
  by_user_pos[by_user] = np.arange(n)
  group_start = np.zeros(n, np.int64)
  sorted_user = user[by_user]
  starts = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]])
  group_start[by_user] = np.repeat(starts, np.diff(np.r_[starts, n]))
  prior = by_user_pos - group_start  # earlier ratings of the same user
  keep = np.flatnonzero(prior >= min_history)[-int(num_samples):]

  shown = np.minimum(prior[keep], history_k)  # [N]
  back = np.arange(history_k, 0, -1)  # K..1 steps back: oldest shown first
  hist_rows = by_user[np.maximum(by_user_pos[keep][:, None] - back[None, :], 0)]  # [N, K] row ids
  valid = back[None, :] <= shown[:, None]  # [N, K]
  items, stars = r['item'].to_numpy()[hist_rows], r['rating'].to_numpy()[hist_rows]
  samples = r.iloc[keep].reset_index(drop=True)
  samples['label'] = (samples['rating'] > label_threshold).astype(np.int32)
  samples['order'] = keep.astype(np.int64)
  samples['history_len'] = prior[keep].astype(np.int64)
  samples['history_items'] = [row[m] for row, m in zip(items, valid)]
  samples['history_ratings'] = [row[m] for row, m in zip(stars, valid)]
  return samples


def protocol_of(d) -> str:
  """config.data.protocol ('default' for a config saved before the field existed)."""
  return str(d.get('protocol', 'default'))


def selection_of(d) -> str:
  """config.data.forget_selection ('random' for a config saved before the field existed)."""
  return str(d.get('forget_selection', 'random'))


def unit_of(d) -> str:
  """config.data.forget_unit ('user' for a config saved before the field existed)."""
  return str(d.get('forget_unit', 'user'))


def split_counts(n: int, fractions, protocol: str = 'default') -> tuple[int, int, int]:
  if protocol == 'paper':  # the original's df[:int(0.6*n)], df[int(0.6*n):int(0.8*n)], the rest
    n_train = int(n * fractions[0])
    n_valid = int(n * (fractions[0] + fractions[1])) - n_train
  else:
    n_train = int(round(n * fractions[0]))
    n_valid = int(round(n * fractions[1]))
  return n_train, n_valid, n - n_train - n_valid


def _check_forget_count(count: int, fraction: float, users) -> None:
  if count == 0:
    raise UserError(f'empty forget set: forget_fraction={fraction} of {len(users)} train users rounds to 0 users; '
                    'raise config.data.forget_fraction or use more samples')
  if count == len(users):
    raise UserError(f'forget_fraction={fraction} of {len(users)} train users leaves no retain set; lower it')


def choose_forget_users(train_users, fraction: float, seed: int, selection: str = 'random') -> np.ndarray:
  """Sorted ids of round(fraction * #users) users; `train_users` is the user of every train row.

  'random': a seeded draw; 'core': the users with the most train rows; 'edge': the fewest.
  Equal counts are ordered by a seeded permutation, so the choice is deterministic per seed."""
  users, counts = np.unique(np.asarray(train_users), return_counts=True)
  count = int(round(fraction * len(users)))
  _check_forget_count(count, fraction, users)
  if selection == 'random':
    return np.sort(np.random.default_rng(seed).choice(users, size=count, replace=False))
  if selection not in SELECTIONS:
    raise UserError(f'config.data.forget_selection={selection!r} must be one of {", ".join(SELECTIONS)}')
  perm = np.random.default_rng([seed, 3]).permutation(len(users))
  key = -counts[perm] if selection == 'core' else counts[perm]
  return np.sort(users[perm[np.argsort(key, kind='stable')[:count]]])


# The train split's two shard draws, each a column '<name>_shard' of the prepared data: random shards
# (SISA's) and balanced user-disjoint ones (RecEraser's).
SHARDINGS = ('sisa', 'receraser')


def shard_counts(train, num_shards: int) -> dict:
  """The manifest's 'shards': train rows per shard of each draw (`train`: the split's frame)."""
  return {name: np.bincount(train[f'{name}_shard'], minlength=num_shards).tolist() for name in SHARDINGS}


def sisa_shards(num_rows: int, num_shards: int, seed: int) -> np.ndarray:
  """[num_rows] shard ids: a seeded permutation dealt round-robin (sizes differ by at most 1)."""
  shard = np.empty(num_rows, np.int32)
  shard[np.random.default_rng([seed, 1]).permutation(num_rows)] = np.arange(num_rows) % num_shards
  return shard


def receraser_shards(row_users, num_shards: int, seed: int) -> np.ndarray:
  """[num_rows] shard ids, user-disjoint, balanced by sample count (greedy, largest user first)."""
  users, counts = np.unique(np.asarray(row_users), return_counts=True)
  _check_shard_users(len(users), num_shards)
  perm = np.random.default_rng([seed, 2]).permutation(len(users))
  order = perm[np.argsort(-counts[perm], kind='stable')]
  load = np.zeros(num_shards, np.int64)
  user_shard = np.empty(len(users), np.int32)
  for u in order:
    s = int(np.argmin(load))
    user_shard[u] = s
    load[s] += counts[u]
  return user_shard[np.searchsorted(users, np.asarray(row_users))]


def _check_shard_users(num_users: int, num_shards: int) -> None:
  if num_users < num_shards:
    raise UserError(f'{num_users} train users cannot fill num_shards={num_shards} user-disjoint shards; '
                    'lower config.data.num_shards')


# ------------------------------------------------------------------ protocol 'paper'
def paper_user_order(train_users, seed: int) -> list:
  """The original's `unique_user_list`: the train users in order of first appearance (pandas'
  `unique`), shuffled in place by Python's `random` seeded with `seed`."""
  users = np.asarray(train_users)
  _, first = np.unique(users, return_index=True)
  order = [int(u) for u in users[np.sort(first)]]
  random.Random(seed).shuffle(order)  # the stream of `random.seed(seed); random.shuffle(order)`
  return order


def paper_forget_users(order: list, fraction: float) -> list:
  """The first int(fraction * #users) users of the shuffled order."""
  count = int(fraction * len(order))
  _check_forget_count(count, fraction, order)
  return order[:count]


def paper_sisa_shards(num_rows: int, num_shards: int, seed: int) -> np.ndarray:
  """[num_rows] shard ids, each drawn uniformly on its own by legacy numpy seeded with `seed`."""
  return np.random.RandomState(seed).choice(np.arange(num_shards), size=num_rows).astype(np.int32)


def paper_receraser_shards(row_users, order: list, num_forget: int, num_shards: int) -> np.ndarray:
  """[num_rows] shard ids: retain users (order[num_forget:]) cut into num_shards consecutive
  chunks as the original cuts them, and the forget users (order[:num_forget]) the same way."""
  _check_shard_users(len(order) - num_forget, num_shards)
  shard_of = {}
  for users in (order[num_forget:], order[:num_forget]):
    n = len(users)
    for k in range(num_shards):
      for u in users[int(n * k / num_shards):int(n * (k + 1) / num_shards)]:
        shard_of[u] = k
  return np.asarray([shard_of[int(u)] for u in np.asarray(row_users)], np.int32)


def item_categories(items: pd.DataFrame) -> dict:
  """{item id: tuple of its category names} of an item table (RawData.items: its '|'-joined
  genres, spelt as the source spells them; '' = none)."""
  return {int(i): tuple(g for g in str(genres).split('|') if g)
          for i, genres in zip(items['item'].to_numpy(), items['genres'].fillna('').to_numpy())}


def forget_rows(train_users, forget_users, d, seed: int, train_items=None, categories=None) -> np.ndarray:
  """is_forget [N] of the train rows (`train_users`, `train_items` in row order) for the drawn
  `forget_users`, as config.data.forget_unit says (module docstring, step 5). `categories`:
  item_categories' map, read by the 'category' unit only."""
  users = np.asarray(train_users)
  unit = unit_of(d)
  if unit == 'user':
    return np.isin(users, forget_users)
  rng = np.random.default_rng(seeds.derive(seed, 'data', 'forget_draw'))
  out = np.zeros(len(users), bool)
  by_user = _rows_by_user(users, forget_users)
  if unit == 'interactions':
    share = float(d.forget_interaction_share)
    for rows in by_user:
      count = min(len(rows), max(1, int(round(share * len(rows)))))
      out[rng.choice(rows, count, replace=False)] = True
    return out
  if categories is None or train_items is None:
    raise UserError("config.data.forget_unit='category' needs the items' categories; this data was prepared "
                    'before they were recorded: prepare it again (--restart=data)')
  items = np.asarray(train_items)
  for rows in by_user:
    held = [set(categories.get(int(i), ())) for i in items[rows]]
    counts = {}
    for names in held:
      for name in names:
        counts[name] = counts.get(name, 0) + 1
    partial = sorted(c for c, n in counts.items() if n < len(rows))
    choices = partial or sorted(counts)  # a user whose every sample shares a category: that one
    if not choices:
      continue  # none of the user's items has a category: nothing of theirs to delete
    chosen = choices[int(rng.integers(len(choices)))]
    out[rows[[chosen in names for names in held]]] = True
  if not out.any():
    raise UserError(f"config.data.forget_unit='category': no item of the {len(by_user)} drawn users' train "
                    f'samples has a category (the item table\'s genres are empty); use forget_unit '
                    "'interactions' or 'user', or give the items genres")
  return out


def _rows_by_user(users: np.ndarray, forget_users) -> list:
  """The train rows of each forget user (sorted user ids), in row order."""
  order = np.argsort(users, kind='stable')
  sorted_users = users[order]
  out = []
  for u in np.sort(np.asarray(forget_users)):
    lo, hi = np.searchsorted(sorted_users, u, 'left'), np.searchsorted(sorted_users, u, 'right')
    out.append(order[lo:hi])
  return out


def seeded_assignment(train_users, d, seed: int, train_items=None, categories=None):
  """What the experiment's seed decides about the train split, from its users (and items) in row
  order (`d` is config.data, its protocol decides how): (forget users (sorted), is_forget [N],
  SISA shard [N], RecEraser shard [N]). `prepare` calls it for config.seed; a run over other
  seeds can call it again on the prepared train split's user and item ids. `categories`
  (item_categories' map) is read by forget_unit 'category' only. The forget users are those
  holding a forget row (under forget_unit 'category', a drawn user none of whose items has a
  category drops out)."""
  users = np.asarray(train_users)
  fraction, num_shards = float(d.forget_fraction), int(d.num_shards)
  if protocol_of(d) == 'paper':
    order = paper_user_order(users, seed)
    forget = paper_forget_users(order, fraction)
    forget_users = np.sort(np.asarray(forget, users.dtype))
    sisa = paper_sisa_shards(len(users), num_shards, seed)
    receraser = paper_receraser_shards(users, order, len(forget), num_shards)
  else:
    forget_users = choose_forget_users(users, fraction, seed, selection_of(d))
    sisa = sisa_shards(len(users), num_shards, seed)
    receraser = receraser_shards(users, num_shards, seed)
  is_forget = forget_rows(users, forget_users, d, seed, train_items, categories)
  if unit_of(d) != 'user':
    forget_users = np.unique(users[is_forget])
  return forget_users, is_forget, sisa, receraser


def apply_protocol(ratings: pd.DataFrame, d, seed: int, categories=None) -> Splits:
  """All steps on a ratings table (user, item, rating, timestamp); `d` is config.data;
  `categories`: item_categories' map (forget_unit 'category')."""
  check_config(d)
  samples = build_samples(ratings, history_k=int(d.history_k), min_history=int(d.min_history),
                          num_samples=int(d.num_samples), label_threshold=float(d.label_threshold))
  counts = split_counts(len(samples), [float(x) for x in d.split], protocol_of(d))
  if min(counts) <= 0:
    raise UserError(f'only {len(samples)} samples have >= {d.min_history} earlier ratings: too few for '
                    f'train/valid/test {counts}; lower config.data.min_history or use more data')
  bounds = np.cumsum((0,) + counts)
  out = {name: samples.iloc[bounds[k]:bounds[k + 1]].reset_index(drop=True) for k, name in enumerate(SPLITS)}
  train = out['train']
  forget_users, train['is_forget'], train['sisa_shard'], train['receraser_shard'] = seeded_assignment(
      train['user'].to_numpy(), d, seed, train['item'].to_numpy(), categories)
  return Splits(out, forget_users)


def reseeded(data: tokens.TokenizedData, data_config, seed: int) -> tokens.TokenizedData:
  """The same token arrays with the train split's forget set and shards drawn for `seed`
  (seeded_assignment): one seed of a run over several (config.seeds)."""
  train = data.splits['train']
  forget_users, is_forget, sisa, receraser = seeded_assignment(train.user_id, data_config, seed,
                                                              train.item_id, data.item_categories)
  splits = dict(data.splits, train=dataclasses.replace(train, is_forget=is_forget, sisa_shard=sisa,
                                                       receraser_shard=receraser))
  return dataclasses.replace(data, splits=splits, forget_users=np.asarray(forget_users))

"""The generic reader: a platform's own interactions as CSV/TSV or Parquet (config.data.csv).

So the tool serves data that is not MovieLens: one interactions table (user, item,
rating, timestamp columns, names configurable), an optional item table (id + title
[+ genres]) and an optional user table (id + a 'profile' text column, or any other
columns, rendered as "The user's <column> is <value>."). Relative paths are
resolved against config.data.raw_dir. Timestamps may be numbers or date strings.
"""
import os

import numpy as np
import pandas as pd

from e2urec_jax.data import prompts
from e2urec_jax.data.sources import RawData, guess_separator, id_mapper, require_unique, sha256_file, to_number
from e2urec_jax.errors import UserError


def read_tabular(csv_cfg, raw_dir: str = '') -> RawData:
  if not csv_cfg.ratings:
    raise UserError("source 'csv' needs --config.data.csv.ratings=FILE (CSV or Parquet with "
                    f'{csv_cfg.user_col}, {csv_cfg.item_col}, {csv_cfg.rating_col}, {csv_cfg.time_col} columns)')
  hashes = {}
  u, i, r, t = csv_cfg.user_col, csv_cfg.item_col, csv_cfg.rating_col, csv_cfg.time_col
  path, table, lines = _read(csv_cfg.ratings, raw_dir, 'config.data.csv.ratings', (u, i, r, t), (u, i), hashes)
  rating = to_number(table[r], path, lines, r).astype(np.float64)
  timestamp = _timestamps(table[t], path, lines, t)

  items_table = users_table = None
  item_file = csv_cfg.item_table or csv_cfg['items']  # csv_cfg.items would be ConfigDict.items, the method
  if item_file:
    ipath, items_table, _ = _read(item_file, raw_dir, 'config.data.csv.item_table', (i, csv_cfg.title_col), (i,),
                                  hashes)
  if csv_cfg.users:
    upath, users_table, _ = _read(csv_cfg.users, raw_dir, 'config.data.csv.users', (u,), (u,), hashes)

  item_keys = table[i] if items_table is None else pd.concat([table[i], items_table[i]])
  item_of = id_mapper(item_keys)
  user_of = id_mapper(table[u] if users_table is None else pd.concat([table[u], users_table[u]]))
  ratings = pd.DataFrame({'user': user_of(table[u]), 'item': item_of(table[i]), 'rating': rating.to_numpy(),
                          'timestamp': timestamp})
  if items_table is None:
    keys = table[i].drop_duplicates()
    items = pd.DataFrame({'item': item_of(keys), 'title': [f'{csv_cfg.item_noun} {k}' for k in keys],
                          'genres': '', 'key': keys.to_numpy()})
  else:
    genre_col = next((c for c in ('genres', 'genre', 'category') if c in items_table.columns), None)
    items = pd.DataFrame({'item': item_of(items_table[i]),
                          'title': items_table[csv_cfg.title_col].fillna('').astype(str).str.strip(),
                          'genres': items_table[genre_col].fillna('').astype(str) if genre_col else '',
                          'key': items_table[i].to_numpy()})
    require_unique(items, 'item', ipath)
  keys = table[u].drop_duplicates()
  users = pd.DataFrame({'user': user_of(keys), 'profile': '', 'key': keys.to_numpy()})
  if users_table is not None:
    profiles = pd.DataFrame({'user': user_of(users_table[u]), 'profile': _profiles(users_table, u)})
    require_unique(profiles, 'user', upath)
    users = users[['user', 'key']].merge(profiles, on='user', how='left').fillna({'profile': ''})
  scale = max(1, int(np.ceil(rating.max())))
  data = RawData('csv', ratings, items, users, item_noun=csv_cfg.item_noun, verb='interacted with',
                 rating_scale=scale, source_sha256=hashes)
  data.check()
  return data


def _read(name: str, raw_dir: str, key: str, columns, id_columns, hashes: dict):
  """(path, table with `id_columns` as str, 1-based line numbers for messages)."""
  path = name if os.path.isabs(name) or not raw_dir else os.path.join(os.path.expanduser(raw_dir), name)
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise UserError(f'{key}: no file {path}; pass the path of your table (relative paths start at data.raw_dir)')
  try:
    if path.endswith(('.parquet', '.pq')):
      table = pd.read_parquet(path)
      lines = np.arange(len(table)) + 1  # Parquet has rows, not lines: "row N".
    else:
      sep = '\t' if path.endswith(('.tsv', '.tsv.gz')) else ','
      table = pd.read_csv(path, sep=sep, dtype={c: str for c in id_columns}, keep_default_na=False,
                          na_values=[''])
      lines = np.arange(len(table)) + 2  # header is line 1
  except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
    raise UserError(f'{path}: cannot parse ({str(e).strip().splitlines()[-1]}); fix that line or the file format')
  missing = [c for c in columns if c not in table.columns]
  if missing and len(table.columns) == 1 and not path.endswith(('.parquet', '.pq')):
    header = str(table.columns[0])
    other = guess_separator(header, len(columns), exclude=sep)
    if other is not None:
      raise UserError(f'{path}: the header {header[:60]!r} is {other!r}-separated but this reader splits '
                      f'{os.path.splitext(path)[1] or "the file"} files on {sep!r}; write the file with {sep!r} '
                      'between fields (or name it .tsv for tabs)')
  if missing:
    raise UserError(f'{path}: no column {missing[0]!r} (has {list(table.columns)[:8]}); set the matching '
                    f'config.data.csv.*_col or rename the column')
  for c in id_columns:
    empty = np.flatnonzero(table[c].isna().to_numpy())
    if len(empty):
      raise UserError(f'{path} line {lines[empty[0]]}: empty {c}; every row needs one')
    table[c] = table[c].astype(str).str.strip()
  hashes[os.path.basename(path)] = sha256_file(path)
  return path, table, lines


def _timestamps(values: pd.Series, path: str, lines, column: str) -> np.ndarray:
  """Unix seconds from numbers (kept as they are: only their order matters) or date strings."""
  numbers = pd.to_numeric(values, errors='coerce')
  if numbers.notna().any():  # numeric column: every value must be a number
    return to_number(values, path, lines, column).astype(np.int64).to_numpy()
  when = pd.to_datetime(values, utc=True, errors='coerce', format='mixed')
  bad = np.flatnonzero(when.isna().to_numpy())
  if len(bad):
    raise UserError(f'{path} line {lines[bad[0]]}: {column} {values.iloc[bad[0]]!r} is not a date; '
                    'fix or remove that line')
  return ((when - pd.Timestamp(0, tz='UTC')) // pd.Timedelta(seconds=1)).astype(np.int64).to_numpy()


def _profiles(users: pd.DataFrame, id_col: str) -> list[str]:
  if 'profile' in users.columns:
    return users['profile'].fillna('').astype(str).tolist()
  others = [c for c in users.columns if c != id_col]
  return [prompts.columns_profile(dict(zip(others, row))) for row in users[others].itertuples(index=False)]


"""The generic reader: a platform's own interactions as CSV/TSV or Parquet (config.data.csv).

So the tool serves data that is not MovieLens: one interactions table (user, item,
rating, timestamp columns, names configurable), an optional item table (id + title
[+ genres]) and an optional user table (id + a 'profile' text column, or any other
columns, rendered as "The user's <column> is <value>."). Relative paths are
resolved against config.data.raw_dir. Timestamps may be numbers or date strings.
"""
import gzip
import os
import re

import numpy as np
import pandas as pd

from e2urec_jax import stamps
from e2urec_jax.data import prompts
from e2urec_jax.data.sources import RawData, guess_separator, id_mapper, require_unique, to_number
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
  data = RawData('csv', ratings, items, users, item_noun=csv_cfg.item_noun, verb='interacted with',
                 source_sha256=hashes, ratings_file=path, lines=np.asarray(lines, np.int64))
  data.check()
  return data


def resolve(name: str, raw_dir: str) -> str:
  """A table's path: absolute, or relative to config.data.raw_dir."""
  path = name if os.path.isabs(name) or not raw_dir else os.path.join(os.path.expanduser(raw_dir), name)
  return os.path.expanduser(path)


def _ids_as_spelled(column: pd.Series) -> pd.Series:
  """A Parquet id column as text the way a person writes the id: integers stored as floats (a
  column with gaps, or written by a tool that had no integer type) lose their '.0'."""
  if pd.api.types.is_float_dtype(column):
    whole = column.dropna()
    if len(whole) and (whole == whole.round()).all():
      return column.astype('Int64').astype(str).where(column.notna(), None)
  if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
    return column.astype(str).where(column.notna(), None)
  return column


def _read(name: str, raw_dir: str, key: str, columns, id_columns, hashes: dict):
  """(path, table with `id_columns` as str, 1-based line numbers for messages)."""
  path = resolve(name, raw_dir)
  if not os.path.isfile(path):
    raise UserError(f'{key}: no file {path}; pass the path of your table (relative paths start at data.raw_dir)')
  sep = '\t' if path.endswith(('.tsv', '.tsv.gz')) else ','
  if os.path.getsize(path) == 0:
    raise UserError(f'{path} is empty; {key} needs a table with a header ({", ".join(columns)}) and one row '
                    'per entry')
  try:
    if path.endswith(('.parquet', '.pq')):
      table = pd.read_parquet(path)
      for c in id_columns:
        if c in table.columns:
          table[c] = _ids_as_spelled(table[c])
      lines = np.arange(len(table)) + 1  # Parquet has rows, not lines: "row N".
    else:
      table = pd.read_csv(path, sep=sep, dtype={c: str for c in id_columns}, keep_default_na=False,
                          na_values=[''])
      lines = _csv_lines(path, len(table))
  except pd.errors.EmptyDataError:
    raise UserError(f'{path} holds no table (only blank lines); {key} needs a header ({", ".join(columns)}) '
                    'and one row per entry')
  except pd.errors.ParserError as e:
    raise UserError(f'{path}: cannot parse ({_parser_line(str(e))}); fix that line or the file format')
  except (UnicodeDecodeError, ValueError, OSError) as e:
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
  if not len(table):
    raise UserError(f'{path} has a header but no rows; {key} needs one row per entry below the header')
  for c in id_columns:
    empty = np.flatnonzero(table[c].isna().to_numpy())
    if len(empty):
      raise UserError(f'{path} line {lines[empty[0]]}: empty {c}; every row needs one')
    table[c] = table[c].astype(str).str.strip()
  hashes[os.path.basename(path)] = stamps.file_sha256(path)
  return path, table, lines


def _csv_lines(path: str, rows: int) -> np.ndarray:
  """The file line of each row pandas read (blank lines are skipped, so they shift the numbers)."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8', errors='replace', newline='') as f:
    text = f.read()
  if '"' in text:  # quoted fields may span lines: count rows as pandas does
    return np.arange(rows) + 2
  numbers = [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()][1:]  # the header is the first
  return np.asarray(numbers[:rows] if len(numbers) >= rows else np.arange(rows) + 2, np.int64)


def _parser_line(message: str) -> str:
  """pandas' 'Expected 2 fields in line 3, saw 3' as 'line 3: expected 2 fields, found 3'."""
  m = re.search(r'Expected (\d+) fields in line (\d+), saw (\d+)', message)
  if m:
    return f'line {m.group(2)}: expected {m.group(1)} fields, found {m.group(3)}'
  return message.strip().splitlines()[-1]


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


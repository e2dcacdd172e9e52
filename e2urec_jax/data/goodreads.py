"""GoodReads (UCSD Book Graph, genre subsets): goodreads_interactions_<genre>.json.gz + goodreads_books_<genre>.json.gz.

The files come from https://mengtingwan.github.io/data/goodreads (byGenre). No
checksums are published for them, so there is no automatic download: the user
points `config.data.raw_dir` at a copy, and the manifest records the sha256 of
what was read. Rating 0 means "shelved, not rated" and is dropped; the timestamp is
`date_added` ('Fri Sep 08 10:44:24 -0700 2017').
"""
import gzip
import json
import os

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from e2urec_jax.data.sources import RawData, file_hashes, id_mapper, require_file
from e2urec_jax.errors import UserError

SOURCE_URL = 'https://mengtingwan.github.io/data/goodreads'
DATE_FORMAT = '%a %b %d %H:%M:%S %z %Y'


def file_names(genre: str) -> tuple[str, str]:
  return f'goodreads_interactions_{genre}.json.gz', f'goodreads_books_{genre}.json.gz'


def read_goodreads(raw_dir: str, genre: str, *, progress: bool = False) -> RawData:
  if not raw_dir:
    raise UserError(f'GoodReads is not downloaded automatically (no published checksums): get '
                    f'{" and ".join(file_names(genre))} from {SOURCE_URL} (byGenre) and pass '
                    '--config.data.raw_dir=PATH')
  raw_dir = os.path.expanduser(raw_dir)
  hint = f'get it from {SOURCE_URL} (byGenre) into --config.data.raw_dir, or set --config.data.goodreads_genre'
  inter_name, books_name = file_names(genre)
  inter_path = require_file(os.path.join(raw_dir, inter_name), hint)
  books_path = require_file(os.path.join(raw_dir, books_name), hint)

  users, items, ratings, dates, lines = [], [], [], [], []
  for n, row in _json_lines(inter_path, ('user_id', 'book_id', 'rating', 'date_added'), progress):
    try:
      rating = float(row['rating'])
    except (TypeError, ValueError):
      raise UserError(f'{inter_path} line {n}: rating {row["rating"]!r} is not a number; fix or remove that line')
    if rating <= 0:  # 0 = not rated
      continue
    users.append(str(row['user_id']))
    items.append(str(row['book_id']))
    ratings.append(rating)
    dates.append(row['date_added'])
    lines.append(n)
  if not ratings:
    raise UserError(f'{inter_path}: no rated interactions (every rating is 0 or the file is empty)')
  when = pd.to_datetime(pd.Series(dates), format=DATE_FORMAT, utc=True, errors='coerce')
  bad = np.flatnonzero(when.isna().to_numpy())
  if len(bad):
    raise UserError(f'{inter_path} line {lines[bad[0]]}: date_added {dates[bad[0]]!r} is not like '
                    "'Fri Sep 08 10:44:24 -0700 2017'; fix or remove that line")
  timestamp = ((when - pd.Timestamp(0, tz='UTC')) // pd.Timedelta(seconds=1)).astype(np.int64)

  book_ids, titles = [], []
  for n, row in _json_lines(books_path, ('book_id',), progress):
    book_ids.append(str(row['book_id']))
    titles.append(str(row.get('title') or row.get('title_without_series') or f'book {row["book_id"]}').strip())

  user_of = id_mapper(pd.Series(users))
  item_of = id_mapper(pd.Series(items + book_ids))
  ratings_df = pd.DataFrame({'user': user_of(users), 'item': item_of(items),
                             'rating': np.asarray(ratings, np.float64), 'timestamp': timestamp.to_numpy()})
  items_df = pd.DataFrame({'item': item_of(book_ids), 'title': titles, 'genres': genre, 'key': book_ids})
  items_df = items_df.drop_duplicates('item').reset_index(drop=True)
  user_keys = pd.unique(pd.Series(users))
  users_df = pd.DataFrame({'user': user_of(user_keys), 'profile': '', 'key': user_keys})
  data = RawData(f'goodreads-{genre}', ratings_df, items_df, users_df, item_noun='book', verb='read',
                 source_sha256=file_hashes(raw_dir, (inter_name, books_name)), ratings_file=inter_path,
                 lines=np.asarray(lines, np.int64))
  data.check()
  return data


def _json_lines(path: str, required: tuple[str, ...], progress: bool):
  """(line number, dict) for each non-blank line; a bad line is a UserError naming it."""
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rt', encoding='utf-8') as f:
      for n, line in enumerate(tqdm(f, desc=os.path.basename(path), unit=' lines', disable=not progress,
                                    mininterval=2.0), 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise UserError(f'{path} line {n}: not valid JSON ({e.msg}); fix or remove that line')
        if not isinstance(row, dict) or any(k not in row for k in required):
          raise UserError(f'{path} line {n}: expected a JSON object with {", ".join(required)}')
        yield n, row
  except (OSError, EOFError, UnicodeDecodeError) as e:  # truncated, not gzip, not text
    raise UserError(f'{path}: cannot read ({e}); download it again')

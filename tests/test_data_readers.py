"""Readers on tiny files in the real formats, and their errors on bad input."""
import gzip
import hashlib
import json
import os
import urllib.error
import zipfile

import numpy as np
import pandas as pd
import pytest

from data_testing import write_ml100k
from e2urec_jax import stamps
from e2urec_jax.config import default_config
from e2urec_jax.data import goodreads, movielens, readers, tabular
from e2urec_jax.errors import UserError


def test_ml100k_reads_tabs_pipes_and_latin1(tmp_path):
  rows = write_ml100k(str(tmp_path))
  data = movielens.read_ml100k(str(tmp_path), pinned={})
  assert len(data.ratings) == len(rows)
  assert data.ratings.dtypes.to_dict() == {'user': np.int64, 'item': np.int64, 'rating': np.float64,
                                            'timestamp': np.int64}
  assert data.items.set_index('item').loc[1, 'title'] == 'Misérables, Les (1995)'
  assert data.users.set_index('user').loc[1, 'profile'] == 'The user is a female. Her job is writer. Her age is 21.'
  assert data.users.set_index('user').loc[2, 'profile'].startswith('The user is a male. His job')
  assert data.items.set_index('item').loc[2, 'genres'] == movielens.ML100K_GENRES[1 + 2 % 18]
  assert set(data.source_sha256) == {'u.data', 'u.item', 'u.user'}


def test_profile_zip_ends_each_profile_with_its_users_zip_code(tmp_path):
  write_ml100k(str(tmp_path))
  profiles = movielens.read_ml100k(str(tmp_path), pinned={}, zip_codes=True).users.set_index('user')['profile']
  assert profiles[1] == 'The user is a female. Her job is writer. Her age is 21. Her zip code is 00001.'
  assert profiles[2].endswith('His zip code is 00002.')  # ids as spelled: the leading zero stays
  (tmp_path / 'users.dat').write_text('1::F::1::10::48067\n')
  (tmp_path / 'ratings.dat').write_text('1::10::5::978300760\n')
  (tmp_path / 'movies.dat').write_text('10::A (1995)::Action\n')
  ml1m = movielens.read_ml1m(str(tmp_path), zip_codes=True).users.set_index('user')['profile']
  assert ml1m[1] == 'The user is a female. Her job is K-12 student. Her age is under 18. Her zip code is 48067.'


def test_ml1m_reads_double_colon_latin1_and_codes(tmp_path):
  with open(tmp_path / 'ratings.dat', 'w', encoding='latin-1') as f:
    f.write('1::10::5::978300760\n1::20::3::978302109\n2::10::1::978301968\n')
  with open(tmp_path / 'users.dat', 'w', encoding='latin-1') as f:
    f.write('1::F::1::10::48067\n2::M::56::16::70072\n')
  with open(tmp_path / 'movies.dat', 'w', encoding='latin-1') as f:
    f.write('10::GoldenEye (1995)::Action|Adventure|Thriller\n20::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n')
  data = movielens.read_ml1m(str(tmp_path))
  assert data.ratings.shape == (3, 4)
  assert data.items.set_index('item').loc[20, 'title'] == 'Cité des enfants perdus, La (1995)'
  assert data.items.set_index('item').loc[10, 'genres'] == 'Action|Adventure|Thriller'
  users = data.users.set_index('user')['profile']
  assert users[1] == 'The user is a female. Her job is K-12 student. Her age is under 18.'
  assert users[2] == 'The user is a male. His job is self-employed. His age is above 56.'


def test_malformed_line_names_file_and_line(tmp_path):
  write_ml100k(str(tmp_path))
  lines = (tmp_path / 'u.data').read_text().splitlines()
  lines[6] = '1\t2\t3'  # a field short
  (tmp_path / 'u.data').write_text('\n'.join(lines) + '\n')
  with pytest.raises(UserError, match=r'u\.data line 7: expected 4 fields'):
    movielens.read_ml100k(str(tmp_path), pinned={})
  lines[6] = '1\t2\tfive\t880000000'
  (tmp_path / 'u.data').write_text('\n'.join(lines) + '\n')
  with pytest.raises(UserError, match=r"u\.data line 7: rating 'five' is not a number"):
    movielens.read_ml100k(str(tmp_path), pinned={})


def test_ml1m_malformed_line(tmp_path):
  (tmp_path / 'ratings.dat').write_text('1::10::5::978300760\n\n1::20::3\n')
  (tmp_path / 'users.dat').write_text('1::F::1::10::48067\n')
  (tmp_path / 'movies.dat').write_text('10::A (1995)::Action\n20::B (1995)::Drama\n')
  with pytest.raises(UserError, match=r'ratings\.dat line 3: expected 4 fields'):
    movielens.read_ml1m(str(tmp_path))


def test_missing_file_says_how_to_get_it(tmp_path):
  write_ml100k(str(tmp_path))
  os.remove(tmp_path / 'u.item')
  with pytest.raises(UserError, match=r'missing file .*u\.item.*ml-100k\.zip.*raw_dir'):
    movielens.read_ml100k(str(tmp_path), pinned={})
  with pytest.raises(UserError, match=r'missing file .*ratings\.dat.*ml-1m\.zip'):
    movielens.read_ml1m(str(tmp_path))


def test_item_without_row_is_an_error(tmp_path):
  write_ml100k(str(tmp_path))
  with open(tmp_path / 'u.data', 'a') as f:
    f.write('1\t999\t4\t890000000\n')
  with pytest.raises(UserError, match=r'item ids in the ratings have no row in the item table .*999'):
    movielens.read_ml100k(str(tmp_path), pinned={})


def test_local_copy_with_other_checksums_warns_but_reads(tmp_path, capsys):
  write_ml100k(str(tmp_path))
  movielens.read_ml100k(str(tmp_path))  # pinned = the GroupLens release: these tiny files differ
  assert 'differs from the GroupLens release' in capsys.readouterr().out


def test_download_offline_points_to_raw_dir(tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise urllib.error.URLError('no network')
  monkeypatch.setattr('urllib.request.urlopen', offline)
  c = default_config()
  c.data.source = 'ml-100k'
  c.data.download_dir = str(tmp_path / 'dl')
  with pytest.raises(UserError, match=r'cannot download .*ml-100k\.zip.*--config\.data\.raw_dir=PATH'):
    readers.read_source(c, str(tmp_path))
  assert not [p for p in os.listdir(tmp_path / 'dl') if p.startswith('.part')]


def test_download_checks_size_and_sha256(tmp_path, monkeypatch):
  """A zip served from file:// with the wrong checksum is refused; with the right one it is extracted."""
  src = tmp_path / 'src'
  write_ml100k(str(src))
  archive = tmp_path / 'ml-100k.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    for name in ('u.data', 'u.item', 'u.user'):
      z.write(src / name, f'ml-100k/{name}')
  blob = archive.read_bytes()
  release = {'url': archive.as_uri(), 'size': len(blob), 'sha256': '0' * 64, 'files': {}}
  monkeypatch.setitem(movielens.RELEASES, 'ml-100k', release)
  with pytest.raises(UserError, match='does not match the pinned'):
    movielens.locate('ml-100k', '', str(tmp_path / 'dl'))
  release['sha256'] = hashlib.sha256(blob).hexdigest()
  release['files'] = {'u.data': stamps.file_sha256(src / 'u.data')}
  folder, ours = movielens.locate('ml-100k', '', str(tmp_path / 'dl'))
  assert ours and sorted(os.listdir(folder)) == ['u.data', 'u.item', 'u.user']
  release['files'] = {'u.data': '1' * 64}  # an extracted file that is not the release: refused, nothing left
  os.remove(tmp_path / 'dl' / 'ml-100k' / 'u.data')
  with pytest.raises(UserError, match='differs from the GroupLens release'):
    movielens.locate('ml-100k', '', str(tmp_path / 'dl'))


def _gz_lines(path, rows):
  with gzip.open(path, 'wt', encoding='utf-8') as f:
    for r in rows:
      f.write((r if isinstance(r, str) else json.dumps(r)) + '\n')


def test_goodreads_drops_unrated_and_parses_dates(tmp_path):
  _gz_lines(tmp_path / 'goodreads_interactions_poetry.json.gz', [
      {'user_id': 'a1f0', 'book_id': '100', 'rating': 4, 'date_added': 'Fri Sep 08 10:44:24 -0700 2017'},
      {'user_id': 'a1f0', 'book_id': '200', 'rating': 0, 'date_added': 'Sat Sep 09 10:44:24 -0700 2017'},
      {'user_id': '0bee', 'book_id': '200', 'rating': 2, 'date_added': 'Mon Jan 01 00:00:00 +0000 2018'},
  ])
  _gz_lines(tmp_path / 'goodreads_books_poetry.json.gz', [
      {'book_id': '100', 'title': 'Leaves of Grass'}, {'book_id': '200', 'title': '', 'title_without_series': 'Ariel'}])
  data = goodreads.read_goodreads(str(tmp_path), 'poetry')
  assert len(data.ratings) == 2  # the rating-0 row is dropped
  r = data.ratings.sort_values('timestamp')
  assert r['timestamp'].tolist() == [1504892664, 1514764800]  # 10:44:24 -0700 = 17:44:24 UTC
  assert data.items.set_index('item').loc[200, 'title'] == 'Ariel'
  assert sorted(data.users['key']) == ['0bee', 'a1f0'] and data.item_noun == 'book' and data.verb == 'read'


def test_goodreads_bad_line_and_missing(tmp_path):
  with pytest.raises(UserError, match='goodreads_interactions_poetry.json.gz.*mengtingwan'):
    goodreads.read_goodreads(str(tmp_path), 'poetry')
  _gz_lines(tmp_path / 'goodreads_interactions_poetry.json.gz', [
      {'user_id': 'a', 'book_id': '1', 'rating': 4, 'date_added': 'Fri Sep 08 10:44:24 -0700 2017'}, '{"user_id": "b",'])
  _gz_lines(tmp_path / 'goodreads_books_poetry.json.gz', [{'book_id': '1', 'title': 'T'}])
  with pytest.raises(UserError, match=r'interactions_poetry\.json\.gz line 2: not valid JSON'):
    goodreads.read_goodreads(str(tmp_path), 'poetry')
  _gz_lines(tmp_path / 'goodreads_interactions_poetry.json.gz', [
      {'user_id': 'a', 'book_id': '1', 'rating': 4, 'date_added': 'yesterday'}])
  with pytest.raises(UserError, match=r'line 1: date_added'):
    goodreads.read_goodreads(str(tmp_path), 'poetry')


def _csv_config(**kw):
  c = default_config().data.csv
  for k, v in kw.items():
    c[k] = v
  return c


def test_generic_csv_with_string_ids_dates_and_profiles(tmp_path):
  pd.DataFrame({'uid': ['u-b', 'u-a', 'u-b'], 'sku': ['x9', 'x9', 'k2'], 'stars': [5, 2, 4],
                'when': ['2024-01-02 10:00', '2024-01-01', '2024-01-03T00:00:00Z']}).to_csv(tmp_path / 'r.csv', index=False)
  pd.DataFrame({'sku': ['x9', 'k2'], 'name': ['Blue Kettle', 'Café Mug'], 'category': ['kitchen', 'kitchen']}) \
      .to_parquet(tmp_path / 'items.parquet')
  pd.DataFrame({'uid': ['u-a', 'u-b'], 'country': ['FR', 'DE']}).to_csv(tmp_path / 'users.csv', index=False)
  cfg = _csv_config(ratings='r.csv', item_table='items.parquet', users='users.csv', user_col='uid', item_col='sku',
                    rating_col='stars', time_col='when', title_col='name', item_noun='product')
  data = tabular.read_tabular(cfg, str(tmp_path))
  assert len(data.ratings) == 3 and data.item_noun == 'product'
  titles = dict(zip(data.items['key'], data.items['title']))
  assert titles == {'x9': 'Blue Kettle', 'k2': 'Café Mug'}
  profiles = dict(zip(data.users['key'], data.users['profile']))
  assert profiles['u-a'] == "The user's country is FR."
  first = data.ratings.sort_values('timestamp').iloc[0]
  assert data.users.set_index('user').loc[first['user'], 'key'] == 'u-a'


def test_generic_parquet_without_item_table(tmp_path):
  pd.DataFrame({'user_id': [1, 2], 'item_id': [7, 8], 'rating': [1.0, 5.0], 'timestamp': [10, 20]}) \
      .to_parquet(tmp_path / 'r.parquet')
  data = tabular.read_tabular(_csv_config(ratings=str(tmp_path / 'r.parquet')))
  assert data.items.set_index('item').loc[7, 'title'] == 'item 7'
  assert (data.users['profile'] == '').all() and data.rating_scale == 5


def test_generic_csv_errors(tmp_path):
  with pytest.raises(UserError, match='needs --config.data.csv.ratings'):
    tabular.read_tabular(_csv_config())
  (tmp_path / 'r.csv').write_text('user_id,item_id,rating,timestamp\n1,2,4,100\n1,3,good,200\n')
  with pytest.raises(UserError, match=r"r\.csv line 3: rating 'good' is not a number"):
    tabular.read_tabular(_csv_config(ratings='r.csv'), str(tmp_path))
  (tmp_path / 'r.csv').write_text('user_id,item_id,rating,timestamp\n1,2,4,100\n1,3,5,soon\n')
  with pytest.raises(UserError, match=r"r\.csv line 3: timestamp 'soon' is not a number"):
    tabular.read_tabular(_csv_config(ratings='r.csv'), str(tmp_path))
  with pytest.raises(UserError, match=r"no column 'ts'"):
    tabular.read_tabular(_csv_config(ratings='r.csv', time_col='ts'), str(tmp_path))
  (tmp_path / 'i.csv').write_text('item_id,title\n2,Two\n')
  (tmp_path / 'r.csv').write_text('user_id,item_id,rating,timestamp\n1,2,4,100\n1,3,5,200\n')
  with pytest.raises(UserError, match='no row in the item table'):
    tabular.read_tabular(_csv_config(ratings='r.csv', items='i.csv'), str(tmp_path))

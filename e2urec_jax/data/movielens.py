"""MovieLens-100K and MovieLens-1M: readers, and checksummed downloads from GroupLens.

The GroupLens licence forbids redistribution, so the files are fetched from
files.grouplens.org (or read from `config.data.raw_dir`) and never shipped.
Pinned checksums:
- ml-100k.zip / ml-1m.zip: size and sha256 as recorded in TensorFlow Datasets'
  url_checksums/movielens.txt (GroupLens itself publishes the MD5s
  0e33842e24a9c977be4e0107933c0723 and c4d9eecfca2ab87c1945afe126590906).
- ML-100K's u.data / u.item / u.user: sha256 of the release files, checked after
  extraction (and, as a warning only, on a local copy).
- ML-1M's extracted files: not pinned (we had no trusted record of them); the zip
  checksum covers downloads, and the manifest records the sha256 of what was read.
"""
import os
import zipfile

import numpy as np
import pandas as pd

from e2urec_jax import runtime
from e2urec_jax.data import prompts
from e2urec_jax.data.sources import (RawData, check_pinned, download, file_hashes, read_delimited,
                                     require_file, require_unique)
from e2urec_jax.errors import UserError

RELEASES = {
    'ml-100k': {
        'url': 'https://files.grouplens.org/datasets/movielens/ml-100k.zip',
        'size': 4924029,
        'sha256': '50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229',
        'files': {
            'u.data': '06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490',
            'u.item': '553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701',
            'u.user': 'f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c',
        },
    },
    'ml-1m': {
        'url': 'https://files.grouplens.org/datasets/movielens/ml-1m.zip',
        'size': 5917549,
        'sha256': 'a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20',
        'files': {},  # ratings.dat / users.dat / movies.dat: see the module docstring.
    },
}
ML100K_FILES = ('u.data', 'u.item', 'u.user')
ML1M_FILES = ('ratings.dat', 'movies.dat', 'users.dat')

# u.genre: the 19 flags at the end of each u.item line, in order.
ML100K_GENRES = ('unknown', 'Action', 'Adventure', 'Animation', "Children's", 'Comedy', 'Crime',
                 'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror', 'Musical', 'Mystery',
                 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western')
# ML-1M README: users.dat codes (occupation 0: 'other or not specified' in the original code's prompts).
ML1M_AGES = {1: 'under 18', 18: '18-24', 25: '25-34', 35: '35-44', 45: '45-49', 50: '50-55', 56: 'above 56'}
ML1M_OCCUPATIONS = (
    'other', 'academic/educator', 'artist', 'clerical/admin', 'college/grad student', 'customer service',
    'doctor/health care', 'executive/managerial', 'farmer', 'homemaker', 'K-12 student', 'lawyer',
    'programmer', 'retired', 'sales/marketing', 'scientist', 'self-employed', 'technician/engineer',
    'tradesman/craftsman', 'unemployed', 'writer')
ML1M_OCCUPATION_0_PAPER = 'other or not specified'


def how_to_get(name: str) -> str:
  return (f'download {RELEASES[name]["url"]} and unzip it, then pass --config.data.raw_dir=PATH '
          f'(the folder with {", ".join(ML100K_FILES if name == "ml-100k" else ML1M_FILES)}), '
          'or leave raw_dir empty to download it automatically')


def locate(name: str, raw_dir: str, download_dir: str) -> tuple[str, bool]:
  """(folder with the release files, whether it is our own checked download)."""
  if raw_dir:
    raw_dir = os.path.expanduser(raw_dir)
    if not os.path.isdir(raw_dir):
      raise UserError(f'config.data.raw_dir {raw_dir!r} is not a folder; {how_to_get(name)}')
    nested = os.path.join(raw_dir, name)  # the zip's own top folder, if the user pointed at its parent
    if not os.path.exists(os.path.join(raw_dir, ML100K_FILES[0] if name == 'ml-100k' else ML1M_FILES[0])) \
        and os.path.isdir(nested):
      raw_dir = nested
    return raw_dir, False
  release = RELEASES[name]
  root = os.path.expanduser(download_dir)
  folder = os.path.join(root, name)
  files = ML100K_FILES if name == 'ml-100k' else ML1M_FILES
  if all(os.path.isfile(os.path.join(folder, f)) for f in files):
    return folder, True
  hint = f'offline? pass --config.data.raw_dir=PATH to a local copy of {name} ({", ".join(files)})'
  archive = download(release['url'], os.path.join(root, name + '.zip'), sha256=release['sha256'],
                     size=release['size'], offline_hint=hint)
  with runtime.atomic_dir(folder) as tmp:
    with zipfile.ZipFile(archive) as z:
      for member in z.namelist():
        base = os.path.basename(member)
        if base in files or base in ('README', 'u.genre', 'u.occupation', 'u.info'):
          with z.open(member) as src, open(os.path.join(tmp, base), 'wb') as dst:
            dst.write(src.read())
    missing = [f for f in files if not os.path.isfile(os.path.join(tmp, f))]
    if missing:
      raise UserError(f'{archive} lacks {missing}; delete it and retry')
    check_pinned(tmp, file_hashes(tmp, release['files']), release['files'], strict=True)
  return folder, True


def read_ml100k(directory: str, *, strict: bool = False, name: str = 'ml-100k',
                pinned: dict | None = None, paper: bool = False, zip_codes: bool = False) -> RawData:
  """u.data (user item rating ts, tabs), u.user (id|age|gender|occupation|zip), u.item (latin-1).

  `pinned`: sha256 per file to compare with (default: the GroupLens release; {} for none).
  `paper`: profiles in the original code's wording (config.data.protocol 'paper').
  `zip_codes`: profiles end with the user's zip code (config.data.profile_zip).
  Users also get `subject`, the pronoun of the paper's prompt.
  """
  hint = how_to_get('ml-100k')
  paths = {f: require_file(os.path.join(directory, f), hint) for f in ML100K_FILES}
  hashes = file_hashes(directory, ML100K_FILES)
  check_pinned(directory, hashes, RELEASES['ml-100k']['files'] if pinned is None else pinned, strict=strict)
  r = read_delimited(paths['u.data'], '\t', ['user', 'item', 'rating', 'timestamp'],
                     numeric=('user', 'item', 'rating', 'timestamp'))
  ratings = _ratings(r)
  u = read_delimited(paths['u.user'], '|', ['user', 'age', 'gender', 'occupation', 'zip'], numeric=('user',))
  users = pd.DataFrame({
      'user': u['user'].astype(np.int64),
      'profile': [prompts.movielens_profile(g, o.strip(), a.strip(), paper=paper, zip_code=z if zip_codes else '')
                  for g, o, a, z in zip(u['gender'], u['occupation'], u['age'], u['zip'])],
      'key': u['user'].astype(np.int64).astype(str),
      'subject': [prompts.movielens_subject(g) for g in u['gender']]})
  flags = [f'g{i}' for i in range(len(ML100K_GENRES))]
  it = read_delimited(paths['u.item'], '|', ['item', 'title', 'date', 'video_date', 'url'] + flags,
                      numeric=('item',))
  flag_values = (it[flags].to_numpy() == '1')
  genres = ['|'.join(g for g, on in zip(ML100K_GENRES, row) if on) for row in flag_values]
  items = pd.DataFrame({'item': it['item'].astype(np.int64), 'title': it['title'].str.strip(),
                        'genres': genres, 'key': it['item'].astype(np.int64).astype(str)})
  data = RawData(name, ratings, require_unique(items, 'item', paths['u.item']),
                 require_unique(users, 'user', paths['u.user']), source_sha256=hashes,
                 ratings_file=paths['u.data'], lines=r['_line'].to_numpy())
  data.check()
  return data


def read_ml1m(directory: str, *, paper: bool = False, zip_codes: bool = False) -> RawData:
  """ratings.dat (UserID::MovieID::Rating::Timestamp), users.dat, movies.dat; '::', latin-1.

  `paper`: profiles in the original code's wording (its occupation 0, every non-'M' gender
  female). Users also get `subject`, the pronoun of the paper's prompt. `zip_codes`: profiles
  end with the user's zip code (config.data.profile_zip)."""
  hint = how_to_get('ml-1m')
  paths = {f: require_file(os.path.join(directory, f), hint) for f in ML1M_FILES}
  hashes = file_hashes(directory, ML1M_FILES)
  r = read_delimited(paths['ratings.dat'], '::', ['user', 'item', 'rating', 'timestamp'],
                     numeric=('user', 'item', 'rating', 'timestamp'))
  ratings = _ratings(r)
  u = read_delimited(paths['users.dat'], '::', ['user', 'gender', 'age', 'occupation', 'zip'],
                     numeric=('user', 'age', 'occupation'))
  ages = [ML1M_AGES.get(int(a), str(int(a))) for a in u['age']]
  occupations = (ML1M_OCCUPATION_0_PAPER,) + ML1M_OCCUPATIONS[1:] if paper else ML1M_OCCUPATIONS
  jobs = [occupations[int(o)] if 0 <= int(o) < len(occupations) else occupations[0] for o in u['occupation']]
  users = pd.DataFrame({
      'user': u['user'].astype(np.int64),
      'profile': [prompts.movielens_profile(g, o, a, paper=paper, zip_code=z if zip_codes else '')
                  for g, o, a, z in zip(u['gender'], jobs, ages, u['zip'])],
      'key': u['user'].astype(np.int64).astype(str),
      'subject': [prompts.movielens_subject(g) for g in u['gender']]})
  m = read_delimited(paths['movies.dat'], '::', ['item', 'title', 'genres'], numeric=('item',))
  items = pd.DataFrame({'item': m['item'].astype(np.int64), 'title': m['title'].str.strip(),
                        'genres': m['genres'].str.strip(), 'key': m['item'].astype(np.int64).astype(str)})
  data = RawData('ml-1m', ratings, require_unique(items, 'item', paths['movies.dat']),
                 require_unique(users, 'user', paths['users.dat']), source_sha256=hashes,
                 ratings_file=paths['ratings.dat'], lines=r['_line'].to_numpy())
  data.check()
  return data


def _ratings(r: pd.DataFrame) -> pd.DataFrame:
  return pd.DataFrame({'user': r['user'].astype(np.int64), 'item': r['item'].astype(np.int64),
                       'rating': r['rating'].astype(np.float64), 'timestamp': r['timestamp'].astype(np.int64)})


"""config.data.source -> RawData: the one place that knows which reader serves which source.

Every source then passes the same data rules (sources.check_ratings): ratings inside the rating
scale, one rating per (user, item) pair."""
import dataclasses
import hashlib
import os

from e2urec_jax import names, storage
from e2urec_jax.data import goodreads, movielens, synthetic, tabular
from e2urec_jax.data.sources import RawData, check_ratings
from e2urec_jax.errors import UserError

SOURCES = names.SOURCE_NAMES  # every source, declared once with its rating scale (names.SOURCES)


def read_source(config, scratch_dir: str) -> RawData:
  """Reads (or generates, downloads) the configured data set and applies the data rules."""
  return check_ratings(held_out_users(_read(config, scratch_dir), config.data), config.data)


HELDOUT_POPULATION = 1  # the synthetic generator's population drawn for data.users='heldout'


def held_out_users(raw: RawData, d) -> RawData:
  """The users data.users asks for: all; all but the held-out share ('experiment'); that share alone
  ('heldout'). A user is held out when a hash of its source id falls under data.heldout_fraction:
  the same users for every seed and run, whatever else changes. Synthetic data draws its held-out
  population separately (synthetic.generate's population), so it is returned whole."""
  users = d.get('users', 'all')
  if users == 'all' or d.source == 'synthetic':
    return raw
  fraction = float(d.heldout_fraction)
  held = raw.users['key'].map(lambda k: int.from_bytes(
      hashlib.sha256(f'heldout\x00{k}'.encode()).digest()[:8], 'little') / 2**64 < fraction)
  keep = set(raw.users['user'][held if users == 'heldout' else ~held])
  if not keep:
    raise UserError(f'config.data.users={users!r} with heldout_fraction={fraction:g} leaves no user of '
                    f'{d.source}; choose a fraction between 0 and 1 that keeps some')
  rows = raw.ratings['user'].isin(keep).to_numpy()
  return dataclasses.replace(raw, ratings=raw.ratings[rows].reset_index(drop=True),
                             users=raw.users[raw.users['user'].isin(keep)].reset_index(drop=True),
                             lines=None if raw.lines is None else raw.lines[rows])


def read_run_source(config, workdir: str, scratch_dir: str) -> RawData:
  """The source data of the run in `workdir`; for synthetic data the workdir's own copy (which forget
  requests scrub), not a new draw (which would bring forgotten users' records back)."""
  copy = os.path.join(workdir, 'data', 'synthetic')
  if config.data.source == 'synthetic' and workdir and storage.isdir(copy):
    return read_synthetic_copy(config, storage.local_copy(copy))
  return read_source(config, scratch_dir)


def read_synthetic_copy(config, folder: str) -> RawData:
  """A synthetic data set's MovieLens-format files in `folder` (a workdir's own copy, which forget
  requests scrub), read as a fresh draw is: the same profiles, the same data rules."""
  return check_ratings(_read_synthetic(config.data, folder), config.data)


def _read_synthetic(d, folder: str) -> RawData:
  """The synthetic data's MovieLens-format files in `folder`, profiles as config.data `d` says."""
  return movielens.read_ml100k(folder, name='synthetic', pinned={}, **_profile_options(d))


def _profile_options(d) -> dict:
  """How MovieLens profiles read: the original code's wording (protocol 'paper'), zip codes (profile_zip)."""
  return {'paper': d.get('protocol', 'default') == 'paper', 'zip_codes': bool(d.get('profile_zip', False))}


def source_files(config) -> dict:
  """{file name: path} of the configured source's files outside the workdir, where they exist
  already (nothing is downloaded): what a prepared workdir's data was read from."""
  d = config.data
  out = {}
  if d.source in ('ml-100k', 'ml-1m'):
    names = movielens.ML100K_FILES if d.source == 'ml-100k' else movielens.ML1M_FILES
    if d.raw_dir:
      folder = os.path.expanduser(d.raw_dir)
      if not os.path.exists(os.path.join(folder, names[0])) and os.path.isdir(os.path.join(folder, d.source)):
        folder = os.path.join(folder, d.source)
    else:
      folder = os.path.join(os.path.expanduser(d.download_dir), d.source)
    out = {n: os.path.join(folder, n) for n in names}
  elif d.source == 'goodreads' and d.raw_dir:
    out = {n: os.path.join(os.path.expanduser(d.raw_dir), n) for n in goodreads.file_names(d.goodreads_genre)}
  elif d.source == 'csv':
    for name in (d.csv.ratings, d.csv.item_table or d.csv['items'], d.csv.users):
      if name:
        path = tabular.resolve(name, d.raw_dir)
        out[os.path.basename(path)] = path
  return {k: v for k, v in out.items() if os.path.isfile(v)}


def _read(config, scratch_dir: str) -> RawData:
  """The configured data set as read (or generated, downloaded): the reader of its source (READERS)."""
  d = config.data
  if d.source not in READERS:
    raise UserError(f'config.data.source={d.source!r}: use one of {", ".join(SOURCES)}')
  return READERS[d.source](config, scratch_dir)


def _read_synthetic_source(config, scratch_dir: str) -> RawData:
  """scratch_dir: a folder inside the preparation's temporary output, where the synthetic
  generator writes its MovieLens-format files (they end up in <workdir>/data/synthetic)."""
  d = config.data
  folder = os.path.join(scratch_dir, 'synthetic')
  population = HELDOUT_POPULATION if d.get('users', 'all') == 'heldout' else 0
  synthetic.generate(d.synthetic, int(d.synthetic.seed), folder, population)  # the world, not the experiment's seed
  return _read_synthetic(d, folder)


def _read_movielens(config, scratch_dir: str) -> RawData:
  d = config.data
  folder, ours = movielens.locate(d.source, d.raw_dir, d.download_dir)
  if d.source == 'ml-100k':
    return movielens.read_ml100k(folder, strict=ours, **_profile_options(d))
  return movielens.read_ml1m(folder, **_profile_options(d))


# config.data.source -> its reader (config, scratch_dir) -> RawData; one per names.SOURCES entry.
READERS = {
    'synthetic': _read_synthetic_source,
    'ml-100k': _read_movielens,
    'ml-1m': _read_movielens,
    'goodreads': lambda config, _: goodreads.read_goodreads(config.data.raw_dir, config.data.goodreads_genre,
                                                            progress=bool(config.progress)),
    'csv': lambda config, _: tabular.read_tabular(config.data.csv, config.data.raw_dir),
}

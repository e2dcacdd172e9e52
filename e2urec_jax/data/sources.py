"""The common in-memory form every reader returns, and the file helpers readers share.

Readers differ only in how they parse; everything after them (protocol, prompts,
tokens) sees one `RawData`, so a new data set is one new reader function.
Parsing keeps exact line numbers, because "line 48213 of ratings.dat has 3 fields"
is what a user needs to fix a file, and a pandas traceback is not.
"""
import dataclasses
import os
import shutil
import tempfile
import urllib.error
import urllib.request

import numpy as np
import pandas as pd

from e2urec_jax import local_files, names, stamps
from e2urec_jax.errors import UserError


@dataclasses.dataclass
class RawData:
  """Interactions, items and users of one data set.

  ratings: user int64, item int64, rating float64, timestamp int64 (unix seconds).
  items:   item int64 (unique), title str, genres str ('|'-joined, '' if unknown), key str.
  users:   user int64 (unique), profile str (one or more sentences, '' = none), key str,
           optionally subject str (the pronoun of the paper's prompt: 'he' / 'she').
  `key` is the id as the source file spells it (GoodReads user ids are hex strings and
  are numbered 1..n here); later commands map user-supplied ids through it.
  """
  name: str
  ratings: pd.DataFrame
  items: pd.DataFrame
  users: pd.DataFrame
  item_noun: str = 'movie'  # "the following movies"
  verb: str = 'watched'  # "the user watched ..." / "has watched" (same form for both).
  rating_scale: int = 5  # "(out of 5 stars)": the highest rating of the scale (check_ratings sets it)
  source_sha256: dict = dataclasses.field(default_factory=dict)  # file name -> sha256 of what was read
  ratings_file: str = ''  # the file the ratings came from, and each rating's line in it (row for Parquet):
  lines: np.ndarray | None = None  # for the messages of check_ratings

  def check(self) -> None:
    """Fails on ids that the prompts could not render (an item or user with no row)."""
    missing = np.setdiff1d(self.ratings['item'].unique(), self.items['item'].to_numpy())
    if len(missing):
      raise UserError(f'{self.name}: {len(missing)} item ids in the ratings have no row in the item table '
                      f'(e.g. {missing[:5].tolist()}); use the item file that belongs to these ratings')
    missing = np.setdiff1d(self.ratings['user'].unique(), self.users['user'].to_numpy())
    if len(missing):
      raise UserError(f'{self.name}: {len(missing)} user ids in the ratings have no row in the user table '
                      f'(e.g. {missing[:5].tolist()}); use the user file that belongs to these ratings')
    if not len(self.ratings):
      raise UserError(f'{self.name}: no ratings were read; check the ratings file')


# The rating scale of each source (lowest, highest), unless config.data.rating_scale declares one:
# declared with the source (names.SOURCES).
SCALES = {name: source.scale for name, source in names.SOURCES.items()}


def rating_range(d) -> tuple[float, float]:
  """(lowest, highest) rating: config.data.rating_scale, or the source's own (SCALES)."""
  declared = tuple(d.rating_scale)
  if declared:
    return float(declared[0]), float(declared[1])
  if d.source not in SCALES:
    raise UserError(f'config.data.source={d.source!r}: use one of {", ".join(SCALES)}')
  return tuple(float(x) for x in SCALES[d.source])


def _where(raw: RawData, i: int) -> str:
  if raw.lines is None:
    return f'{raw.name} rating {i + 1}'
  unit = 'row' if raw.ratings_file.endswith(('.parquet', '.pq')) else 'line'
  return f'{raw.ratings_file or raw.name} {unit} {int(raw.lines[i])}'


def check_ratings(raw: RawData, d) -> RawData:
  """The data rules every source passes (config.data): ratings inside the rating scale, the label
  threshold inside it too, and one rating per (user, item) pair: 'latest' keeps the latest (by
  timestamp, then by line) and says how many it dropped, 'error' refuses the file. Sets
  raw.rating_scale (the prompt's "out of N stars") to the scale's top."""
  low, high = rating_range(d)
  scale = f'{low:g}-{high:g}'
  source = 'config.data.rating_scale' if tuple(d.rating_scale) else f"the {d.source} source's scale"
  r = raw.ratings['rating'].to_numpy(np.float64)
  outside = np.flatnonzero(~((r >= low) & (r <= high)))
  if len(outside):
    i = int(outside[0])
    raise UserError(f'{_where(raw, i)}: rating {r[i]:g} is outside the rating scale {scale} ({source}; '
                    f'{len(outside)} rating(s) in all); fix or remove that line, or declare the scale with '
                    f'--config.data.rating_scale="({low:g}, {high:g})" set to the real lowest and highest rating')
  if not low <= float(d.label_threshold) < high:
    raise UserError(f'config.data.label_threshold={d.label_threshold:g} is outside the rating scale {scale} '
                    f'({source}): every label would be {"Yes" if d.label_threshold < low else "No"}; '
                    f'pick a threshold from {low:g} up to (not including) {high:g}')
  raw = _one_rating_per_pair(raw, d.duplicates)
  raw.rating_scale = int(high) if float(high).is_integer() else high
  return raw


def _one_rating_per_pair(raw: RawData, rule: str) -> RawData:
  ratings = raw.ratings
  lines = raw.lines if raw.lines is not None else np.arange(len(ratings)) + 1
  order = np.lexsort((lines, ratings['timestamp'].to_numpy()))  # oldest first; ties: the later line is later
  later = ratings.iloc[order].duplicated(['user', 'item'], keep='last').to_numpy()
  drop = order[later]
  if not len(drop):
    return raw
  if rule == 'error':
    i = int(drop[0])
    u, it = ratings['user'].iloc[i], ratings['item'].iloc[i]
    same = np.flatnonzero((ratings['user'].to_numpy() == u) & (ratings['item'].to_numpy() == it))
    ukey = dict(zip(raw.users['user'], raw.users['key'])).get(u, u)
    ikey = dict(zip(raw.items['item'], raw.items['key'])).get(it, it)
    shown = ' and '.join(str(int(lines[j])) for j in same[:3])
    raise UserError(f'{raw.ratings_file or raw.name} lines {shown}: user {ukey!r} rated item {ikey!r} more than once '
                    f'({len(drop)} repeated (user, item) ratings in all); config.data.duplicates=\'error\' refuses '
                    "them: remove the repeats, or set --config.data.duplicates=latest to keep each pair's latest")
  keep = np.ones(len(ratings), bool)
  keep[drop] = False
  print(f'note: {len(drop)} rating(s) repeated a (user, item) pair of {raw.ratings_file or raw.name}; kept the '
        "latest of each (config.data.duplicates='latest'; 'error' refuses such a file)")
  raw.ratings = ratings[keep].reset_index(drop=True)
  raw.lines = lines[keep]
  return raw


def require_file(path: str, how_to_get: str) -> str:
  if not os.path.isfile(path):
    raise UserError(f'missing file {path}; {how_to_get}')
  return path


def read_delimited(path: str, sep: str, names: list[str], *, encoding: str = 'latin-1',
                   numeric: tuple[str, ...] = ()) -> pd.DataFrame:
  """Reads a `sep`-separated text file into string columns `names` (extra fields are dropped).

  Every line must have at least len(names) fields and the `numeric` columns must
  parse as numbers; otherwise a UserError names the file and line.
  Blank lines are skipped (they still count in line numbers).
  """
  with open(path, encoding=encoding, newline='') as f:
    lines = f.read().splitlines()
  numbers = [i + 1 for i, line in enumerate(lines) if line.strip()]
  rows = [lines[n - 1].split(sep) for n in numbers]
  need = len(names)
  for n, row in zip(numbers, rows):
    if len(row) < need:
      other = guess_separator(lines[n - 1], need, exclude=sep)
      if other is not None:
        raise UserError(f'{path} line {n}: expected {need} fields separated by {sep!r}, but the line is '
                        f'{other!r}-separated: {lines[n - 1][:80]!r}; write the file with {sep!r} between fields '
                        '(the format of this data set)')
      raise UserError(f'{path} line {n}: expected {need} fields separated by {sep!r}, found {len(row)}: '
                      f'{lines[n - 1][:80]!r}; fix or remove that line')
  frame = pd.DataFrame([r[:need] for r in rows], columns=names, dtype=object)
  frame['_line'] = np.asarray(numbers, np.int64)
  for col in numeric:
    frame[col] = to_number(frame[col], path, frame['_line'], col)
  return frame


SEPARATORS = ('\t', '::', '|', ',', ';', ' ')


def guess_separator(line: str, need: int, exclude: str = '') -> str | None:
  """A common separator that splits `line` into at least `need` fields (not `exclude`), else None."""
  for sep in SEPARATORS:
    if sep != exclude and sep not in exclude and len(line.split(sep)) >= max(2, need):
      return sep
  return None


def to_number(values: pd.Series, path: str, line_numbers, column: str) -> pd.Series:
  """Numeric column, or a UserError naming the first line whose value is not a number."""
  out = pd.to_numeric(values, errors='coerce')
  bad = np.flatnonzero(out.isna().to_numpy())
  if len(bad):
    i = bad[0]
    raise UserError(f'{path} line {int(np.asarray(line_numbers)[i])}: {column} {values.iloc[i]!r} is not a number; '
                    'fix or remove that line')
  return out


def require_unique(table: pd.DataFrame, col: str, path: str) -> pd.DataFrame:
  dup = table[col].duplicated()
  if dup.any():
    raise UserError(f'{path}: {col} id {table[col][dup].iloc[0]} appears twice; one row per {col}')
  return table.reset_index(drop=True)


def id_mapper(keys: pd.Series):
  """key -> int64 id: the key itself when every key is an integer written plainly ('13', not '13.0'
  or '013': two spellings of one number must stay two ids), else 1..n in sorted key order.

  Build it over every table's keys (ratings + items) so the tables agree.
  """
  text = keys.astype(str)
  plain = text.str.fullmatch(r'-?(0|[1-9][0-9]{0,17})').all() if len(text) else False
  if plain:
    return lambda k: pd.Series(k).astype(str).astype(np.int64).to_numpy()
  uniques = np.sort(keys.astype(str).unique())
  return lambda k: np.searchsorted(uniques, pd.Series(k).astype(str).to_numpy()).astype(np.int64) + 1


# ------------------------------------------------------------------ downloads
def download(url: str, dest: str, *, sha256: str | None, size: int | None, offline_hint: str) -> str:
  """Fetches `url` to `dest` (temp file + rename) and checks its size and sha256; returns dest.

  An existing `dest` with the right checksum is reused; a wrong one is fetched again.
  """
  if os.path.exists(dest) and (sha256 is None or stamps.file_sha256(dest) == sha256):
    return dest
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix='.part_')
  try:
    with os.fdopen(fd, 'wb') as out:
      try:
        with urllib.request.urlopen(url, timeout=60) as response:
          shutil.copyfileobj(response, out, 1 << 20)
      except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, 'reason', None) or e
        raise UserError(f'cannot download {url} ({reason}); {offline_hint}')
    got_size = os.path.getsize(tmp)
    if size is not None and got_size != size:
      raise UserError(f'{url}: downloaded {got_size} bytes, expected {size}; retry, or {offline_hint}')
    got = stamps.file_sha256(tmp)
    if sha256 is not None and got != sha256:
      raise UserError(f'{url}: sha256 {got} does not match the pinned {sha256}; the file changed upstream '
                      f'or the download is corrupt; {offline_hint}')
    local_files.publish(tmp, dest)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return dest


def file_hashes(directory: str, names) -> dict[str, str]:
  return {name: stamps.file_sha256(os.path.join(directory, name)) for name in names}


def check_pinned(directory: str, hashes: dict[str, str], pinned: dict[str, str], *, strict: bool) -> None:
  """Compares computed hashes with the pinned release; a mismatch fails (a download) or warns (a user's copy)."""
  for name, want in pinned.items():
    got = hashes.get(name)
    if got is None or got == want:
      continue
    msg = f'{os.path.join(directory, name)}: sha256 {got} differs from the GroupLens release ({want})'
    if strict:
      raise UserError(msg + '; delete that folder and retry the download')
    print(f'warning: {msg}; using it as given')

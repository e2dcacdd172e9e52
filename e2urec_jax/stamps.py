"""Stamps: what the files of a published artifact were when written (size, sha256), checked on load.

Every artifact folder (a model, adapters, the prepared data) is published with STAMP_FILE
beside its files: {'files': {relative path: {'size', 'sha256'}}}. `verify` compares the files
with it and raises `Corrupt` (a UserError) naming the first file that is missing, of another
size or of another content, and the fix the caller gives (which phase to rerun). A process
hashes each file once: the verdict is kept by (path, size, mtime), so a model loaded by several
phases of one run is read for hashing once. A folder without a stamp (written before stamps
existed) is not checked.

Plain files and hashlib only: every layer may import this module.
"""
import hashlib
import json
import os

from e2urec_jax.errors import UserError

STAMP_FILE = '.stamp.json'
CACHES = ('.sha256.json',)  # rewritten after publishing (train/artifacts.content_hash's cache): never stamped
_VERIFIED = {}  # (path, size, mtime_ns) -> sha256 already computed by this process


class Corrupt(UserError):
  """An artifact's file differs from its stamp; `path` is the file, `folder` the artifact."""

  def __init__(self, message: str, *, path: str, folder: str):
    super().__init__(message)
    self.path, self.folder = path, folder


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def _hashed(path: str) -> str:
  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _VERIFIED:
    _VERIFIED[key] = file_sha256(path)
  return _VERIFIED[key]


def _files(folder: str, exclude=()):
  for root, dirs, files in os.walk(folder):
    rel_root = os.path.relpath(root, folder)
    dirs[:] = sorted(d for d in dirs if os.path.normpath(os.path.join(rel_root, d)) not in exclude)
    for f in sorted(files):
      rel = os.path.normpath(os.path.join(rel_root, f))
      if f != STAMP_FILE and f not in CACHES and not f.startswith('.tmp') and rel not in exclude:
        yield rel


def write(folder: str, exclude=()) -> dict:
  """Stamps every file under `folder` (but `exclude`d relative paths and folders); returns the stamp."""
  files = {rel: {'size': os.path.getsize(os.path.join(folder, rel)), 'sha256': _hashed(os.path.join(folder, rel))}
           for rel in _files(folder, exclude)}
  stamp = {'files': files}
  tmp = os.path.join(folder, STAMP_FILE + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(stamp, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(folder, STAMP_FILE))
  return stamp


def read(folder: str) -> dict | None:
  path = os.path.join(folder, STAMP_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, OSError):
    raise Corrupt(f'{path} is not a readable stamp; the artifact {folder} cannot be checked', path=path, folder=folder)


def verify(folder: str, fix: str, files=None) -> None:
  """Corrupt (naming the file and `fix`) when a stamped file of `folder` (or of `files`, relative
  paths) is missing, of another size or another sha256 than written. No stamp: nothing to check."""
  stamp = read(folder)
  if stamp is None:
    return
  entries = stamp.get('files', {})
  for rel in (sorted(entries) if files is None else files):
    want = entries.get(rel)
    if want is None:
      continue
    path = os.path.join(folder, rel)
    if not os.path.exists(path):
      raise Corrupt(f'{path} is missing (written with {want["size"]} bytes); {fix}', path=path, folder=folder)
    size = os.path.getsize(path)
    if size != want['size']:
      raise Corrupt(f'{path} is corrupt: {size} bytes where {want["size"]} were written; {fix}',
                    path=path, folder=folder)
    if _hashed(path) != want['sha256']:
      raise Corrupt(f'{path} is corrupt: its sha256 differs from the one written with it; {fix}',
                    path=path, folder=folder)


def digest(folder: str, prefix: str = '') -> str | None:
  """sha256 over the stamped files under `prefix` (names and hashes, as recorded): the folder's content."""
  stamp = read(folder)
  if stamp is None:
    return None
  items = sorted((k, v['sha256']) for k, v in stamp['files'].items() if k.startswith(prefix))
  return hashlib.sha256(json.dumps(items).encode()).hexdigest()

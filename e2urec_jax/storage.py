"""Workdir files on a local disk or an object store (gs://, s3://, ... through fsspec): one path layer.

Every file the project reads or writes in a workdir goes through here or through runtime's
write_json / read_json / atomic_dir, which call here for URLs. A local path keeps exactly the
behaviour it always had (os calls, temp file + rename, umask permissions: local_files.py); a URL
(`scheme://...`) goes through fsspec, whose Google Cloud Storage driver is the gcsfs package.

Object stores differ from a disk in three ways, handled here once:
- No rename, so no atomic folder: `publish_dir` uploads a finished local folder file by file,
  its .json files last. Readers test those (config.json, adapter_config.json, manifest.json,
  ensemble.json, done.json), so a folder with its marker is complete; a crash mid-upload
  leaves a folder without one, which the next run redoes. Replacing a folder deletes the old
  markers first. A single object write is atomic on its own.
- No appends and no local paths: libraries that want a local file (safetensors, transformers,
  HF datasets, orbax, tensorboardX, numpy) work on a staging copy: `local_copy(url)` downloads a
  file or folder once per process, `runtime.atomic_dir(url)` builds in a local temp folder and
  publishes it, and a training phase's metrics and resume checkpoints are written locally and
  uploaded at each checkpoint (train/loop.py, train/checkpoint.py): the bucket is as fresh as
  the last checkpoint, which is what a resume needs.
- No file locks: what needs flock (forget's request lock) refuses a URL workdir (`require_local`).

fsspec is imported only when a URL is used: local runs never load it.
"""
import atexit
import contextlib
import hashlib
import os
import re
import shutil
import tempfile

from e2urec_jax import local_files
from e2urec_jax.errors import UserError

_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')
_MARKER_SUFFIX = '.json'  # published last, deleted first (see the module docstring)
# How to get credentials, by scheme: the line a permission error ends with.
_CREDENTIALS = {
    'gs': ('on a Cloud TPU/GCE VM give its service account write access to the bucket (roles/storage.objectAdmin); '
           'elsewhere run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS'),
    's3': 'configure AWS credentials (`aws configure`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)',
}
_PACKAGES = {'gs': 'gcsfs', 'gcs': 'gcsfs', 's3': 's3fs', 'az': 'adlfs', 'abfs': 'adlfs'}
_AUTH_WORDS = ('401', '403', 'anonymous caller', 'credential', 'unauthorized', 'forbidden', 'access denied',
               'permission', 'not authorized', 'does not have storage')


def is_remote(path) -> bool:
  """True for a URL (gs://bucket/run, s3://..., memory://...), False for a local path."""
  return bool(_URL.match(os.fspath(path)))


def scheme(url: str) -> str:
  return url.split('://', 1)[0].lower()


def abspath(path: str) -> str:
  """os.path.abspath for a local path; a URL without its trailing slash (os.path would mangle '//')."""
  return path.rstrip('/') if is_remote(path) else os.path.abspath(path)


def inside(path: str, folder: str) -> bool:
  """`path` is `folder` or lies below it (local paths with their links resolved; URLs as written)."""
  if is_remote(path) or is_remote(folder):
    path, folder = abspath(path), abspath(folder)
  else:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip('/') + '/')


def join(path: str, *parts: str) -> str:
  return os.path.join(path, *parts)  # POSIX joining is right for URLs too


# ------------------------------------------------------------------ the file system of a URL
def filesystem(url: str):
  """(fsspec file system, path as it names it) for a URL; a missing driver is a one-line UserError.

  Listings are not cached across calls (gcsfs caches them): another process (a pod slice's
  process 0) may have written since, so every query asks the store."""
  try:
    import fsspec  # heavy: fsspec, for URLs only
  except ImportError:
    raise UserError(f'{url}: workdirs on object stores need fsspec (pip install fsspec {_PACKAGES.get(scheme(url), "")})')
  try:
    fs, path = fsspec.core.url_to_fs(url)
  except (ImportError, ValueError) as e:
    package = _PACKAGES.get(scheme(url))
    fix = f'pip install {package}' if package else f'install the fsspec driver for {scheme(url)}://'
    raise UserError(f'{url}: no file system for {scheme(url)}:// URLs ({str(e).splitlines()[0]}); {fix}, '
                    'or use a local --workdir (tpu/sync.sh mirrors one to a bucket)') from None
  fs.invalidate_cache()
  return fs, path


def _bucket(url: str) -> str:
  rest = url.split('://', 1)[1]
  return f'{scheme(url)}://{rest.split("/", 1)[0]}'


def remote_error(e: BaseException, url: str, what: str) -> UserError:
  """One line for a failed object-store call: missing credentials name the fix, others the cause."""
  text = f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}'.rstrip(': ')
  if isinstance(e, PermissionError) or any(w in str(e).lower() for w in _AUTH_WORDS) or \
      'credential' in type(e).__name__.lower() or 'auth' in type(e).__module__.lower():
    fix = _CREDENTIALS.get(scheme(url), f'set up credentials for {scheme(url)}://')
    return UserError(f'{what} {url} was refused: no credentials with access to {_bucket(url)} ({text[:160]}); {fix}')
  return UserError(f'{what} {url} failed ({text[:200]}); check the URL and the network, then rerun the same command')


@contextlib.contextmanager
def _errors(url: str, what: str):
  """Object-store errors as one-line UserErrors; a missing object stays FileNotFoundError."""
  try:
    yield
  except (UserError, FileNotFoundError):
    raise
  except Exception as e:  # drivers raise their own types (gcsfs HttpError, google.auth errors, ...)
    raise remote_error(e, url, what) from e


# ------------------------------------------------------------------ queries
def exists(path: str) -> bool:
  if not is_remote(path):
    return os.path.exists(path)
  fs, p = filesystem(path)
  with _errors(path, 'reading'):
    return fs.exists(p)


def isdir(path: str) -> bool:
  if not is_remote(path):
    return os.path.isdir(path)
  fs, p = filesystem(path)
  with _errors(path, 'reading'):
    return fs.isdir(p)


def isfile(path: str) -> bool:
  if not is_remote(path):
    return os.path.isfile(path)
  fs, p = filesystem(path)
  with _errors(path, 'reading'):
    return fs.isfile(p)


def listdir(path: str) -> list:
  """Names in a folder (os.listdir's order for a local path); FileNotFoundError when there is none."""
  if not is_remote(path):
    return os.listdir(path)
  fs, p = filesystem(path)
  with _errors(path, 'listing'):
    if not fs.isdir(p):
      raise FileNotFoundError(path)
    return sorted({os.path.basename(str(x).rstrip('/')) for x in fs.ls(p, detail=False)} - {''})


def files_under(path: str) -> dict:
  """{path relative to `path`: size in bytes} of every file below a folder."""
  if not is_remote(path):
    out = {}
    for root, _, files in os.walk(path):
      for f in files:
        full = os.path.join(root, f)
        out[os.path.relpath(full, path)] = os.path.getsize(full)
    return out
  fs, p = filesystem(path)
  with _errors(path, 'listing'):
    found = fs.find(p, detail=True)
  root = fs._strip_protocol(p).rstrip('/') + '/'
  return {name[len(root):]: int(info.get('size') or 0) for name, info in found.items()
          if name.startswith(root) and info.get('type', 'file') == 'file'}


def stamp(path: str) -> list:
  """[size, modification] of a file: what changes when it is rewritten (a cache's validity check)."""
  if not is_remote(path):
    return [os.path.getsize(path), os.path.getmtime(path)]
  fs, p = filesystem(path)
  with _errors(path, 'reading'):
    info = fs.info(p)
  changed = next((str(info[k]) for k in ('generation', 'ETag', 'etag', 'md5Hash', 'mtime', 'updated', 'LastModified',
                                         'last_modified', 'created') if info.get(k) is not None), '')
  return [int(info.get('size') or 0), changed]


# ------------------------------------------------------------------ reading and writing files
def open_file(path: str, mode: str = 'r', **kwargs):
  """A file object; for a URL, writes land when the file is closed (one object, atomically)."""
  if not is_remote(path):
    return open(path, mode, **kwargs)
  fs, p = filesystem(path)
  with _errors(path, 'writing' if any(c in mode for c in 'wax') else 'reading'):
    return fs.open(p, mode, **kwargs)


def read_bytes(path: str) -> bytes:
  with open_file(path, 'rb') as f:
    return f.read()


def read_text(path: str, encoding: str = 'utf-8') -> str:
  return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
  """Writes a whole file atomically: temp file + rename locally, one object write on a store."""
  if not is_remote(path):
    local_files.write_file_atomic(path, data)
    return
  fs, p = filesystem(path)
  with _errors(path, 'writing'):
    fs.pipe_file(p, data)
  _forget_copies(path, data)


def copy_file(src: str, dst: str) -> None:
  """shutil.copy between local paths, else a read and a write (either side may be a URL)."""
  if not is_remote(src) and not is_remote(dst):
    shutil.copy(src, dst)
  else:
    write_bytes(dst, read_bytes(src))


def makedirs(path: str) -> None:
  """os.makedirs(exist_ok=True); nothing on an object store (a folder exists when a file is in it)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  if not is_remote(path):
    os.remove(path)
    return
  fs, p = filesystem(path)
  with _errors(path, 'deleting'):
    fs.rm_file(p)
  _forget_copies(path)


def rmtree(path: str) -> None:
  """Deletes a folder and everything in it (nothing if it is absent); markers first on a store."""
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=True)
    return
  fs, p = filesystem(path)
  names = files_under(path)
  with _errors(path, 'deleting'):
    for rel in sorted(names, key=lambda r: not r.endswith(_MARKER_SUFFIX)):  # markers first: the folder stops counting
      fs.rm_file(p.rstrip('/') + '/' + rel)
    if fs.exists(p):  # empty "directories" some stores keep
      with contextlib.suppress(FileNotFoundError):
        fs.rm(p, recursive=True)
  _forget_copies(path)


def check_writable(url: str) -> None:
  """A probe write and delete under `url`: fails with one line (credentials, driver) before any work."""
  fs, p = filesystem(url)
  probe = p.rstrip('/') + f'/.probe_{os.getpid()}'
  with _errors(url, 'writing to'):
    fs.pipe_file(probe, b'')
    fs.rm_file(probe)


# ------------------------------------------------------------------ staging: local copies of remote folders
_STAGE = {'root': None}
_COPIES = {}  # url -> local copy downloaded by this process


def staging_root() -> str:
  """This process's local folder for copies of remote files and folders being built; removed at exit."""
  if _STAGE['root'] is None:
    _STAGE['root'] = tempfile.mkdtemp(prefix='e2urec_jax_stage_')
    atexit.register(shutil.rmtree, _STAGE['root'], True)
  return _STAGE['root']


def staging_dir(url: str, purpose: str = 'work') -> str:
  """An empty local folder that stands for `url` in this process (the bucket holds the truth:
  what an earlier call left there is removed)."""
  key = hashlib.sha256(f'{purpose}\0{url}'.encode()).hexdigest()[:16]
  path = os.path.join(staging_root(), f'{purpose}_{key}')
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  return path


def local_copy(path: str) -> str:
  """A local path with the content of `path`: itself when local, else a download of the file or
  folder (once per process; publishing to the URL again drops the copy)."""
  if not is_remote(path):
    return path
  url = abspath(path)
  if url in _COPIES and os.path.exists(_COPIES[url]):
    return _COPIES[url]
  fs, p = filesystem(url)
  with _errors(url, 'reading'):
    if fs.isfile(p):
      local = os.path.join(tempfile.mkdtemp(dir=staging_root(), prefix='copy_'), os.path.basename(p))
      fs.get_file(p, local)
    else:
      local = tempfile.mkdtemp(dir=staging_root(), prefix='copy_')
      found = files_under(url)
      if not found and not fs.isdir(p):
        raise FileNotFoundError(url)
      download_files(url, local, list(found))
  _COPIES[url] = local
  return local


def _forget_copies(url: str, data: bytes | None = None) -> None:
  """Keeps this process's local copies true to `url`, which was just written (`data`: a file's
  new content) or deleted: copies of it or below it are dropped, and a copy of a folder above
  it gets the new file (or loses the deleted one)."""
  url = abspath(url)
  for key in [k for k in _COPIES if k == url or k.startswith(url + '/')]:
    local = _COPIES.pop(key)
    shutil.rmtree(local if os.path.isdir(local) else os.path.dirname(local), ignore_errors=True)
  for key, local in _COPIES.items():
    if url.startswith(key + '/') and os.path.isdir(local):
      target = os.path.join(local, url[len(key) + 1:])
      if data is None and os.path.isdir(target):
        shutil.rmtree(target, ignore_errors=True)
      elif data is None:
        with contextlib.suppress(FileNotFoundError):
          os.remove(target)
      else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'wb') as f:
          f.write(data)


def adopt_copy(url: str, local_dir: str) -> None:
  """`local_dir`, just uploaded to `url` (publish_dir), becomes this process's copy of it: what
  was built is not downloaded again (a model saved, then loaded by the next phase)."""
  _COPIES[abspath(url)] = local_dir


def upload_files(local_dir: str, url: str, names=None) -> None:
  """Uploads files of `local_dir` (all, or the relative `names`) under `url`, .json files last."""
  fs, p = filesystem(url)
  if names is None:
    names = list(files_under(local_dir))
  with _errors(url, 'uploading to'):
    for rel in sorted(names, key=lambda r: (r.endswith(_MARKER_SUFFIX), r)):
      fs.put_file(os.path.join(local_dir, rel), p.rstrip('/') + '/' + rel.replace(os.sep, '/'))
  _forget_copies(url)


def sync_up(local_dir: str, url: str, names) -> None:
  """Uploads those of the relative `names` whose size differs under `url` (growing logs)."""
  have = files_under(url) if isdir(url) else {}
  local = {rel: os.path.getsize(os.path.join(local_dir, rel)) for rel in names
           if os.path.isfile(os.path.join(local_dir, rel))}
  changed = [rel for rel, size in local.items() if have.get(rel.replace(os.sep, '/')) != size]
  if changed:
    upload_files(local_dir, url, changed)


def download_files(url: str, local_dir: str, names=None) -> None:
  """Downloads files under `url` (all, or the relative `names`) into `local_dir`."""
  fs, p = filesystem(url)
  if names is None:
    names = list(files_under(url))
  with _errors(url, 'downloading'):
    for rel in names:
      target = os.path.join(local_dir, rel)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      fs.get_file(p.rstrip('/') + '/' + rel, target)


def publish_dir(local_dir: str, url: str) -> None:
  """Puts a finished local folder at `url` without a rename: the old folder's markers go first,
  then the rest of it, then the new files, markers last (the module docstring)."""
  rmtree(url)
  upload_files(local_dir, url)


def require_local(path: str, what: str, why: str) -> None:
  """A UserError for operations that need a local file system (file locks, owner-only files)."""
  if is_remote(path):
    raise UserError(f'{what} needs a local --workdir, not {path}: {why}; copy the workdir down '
                    f'(gsutil -m rsync -r {path} DIR), run it on DIR and copy DIR back')

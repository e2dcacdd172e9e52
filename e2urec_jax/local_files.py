"""Local files written whole: temp file + fsync + rename, with the permissions the umask gives.

The piece both `storage` (a local path's `write_bytes`) and `runtime` (`write_json`, `atomic_dir`)
write through, below them both. A full or read-only disk becomes a one-line UserError that names
what was being written; the old file is left as it was.
"""
import contextlib
import errno
import os
import tempfile

from e2urec_jax.errors import UserError

# errno values that mean "the disk cannot take this write": they become one-line UserErrors.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(e: OSError, what: str) -> UserError:
  """A UserError for a failed write: names what was written and how to fix it."""
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    fix = 'free disk space and rerun the same command'
  elif e.errno == errno.EROFS:
    fix = 'the file system is read-only; pass a --workdir on a writable disk'
  else:
    fix = 'check the permissions of the workdir and rerun the same command'
  return UserError(f'{what} failed: {e.strerror or e}; {fix} (earlier checkpoints and artifacts are intact)')


# The process umask, read once at import (before any worker thread could create a file while
# it is briefly zero): what a plain open() or makedirs would apply.
UMASK = os.umask(0)
os.umask(UMASK)


def publish(tmp: str, final: str) -> None:
  """Renames a finished temp file or folder into place, with the permissions a plain open() or
  makedirs would have given it: mkstemp and mkdtemp make theirs owner-only, which would hide
  results and models from the rest of a team sharing a workdir. A folder's files and
  subfolders get them too (libraries such as safetensors write their files owner-only).
  Secrets are never published here (a forget key lives outside the workdir, 0600)."""
  follow_umask(tmp)
  os.replace(tmp, final)


def follow_umask(path: str) -> None:
  """`path` (and, for a folder, everything under it) with the permissions the umask gives new files."""
  os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~UMASK)
  if os.path.isdir(path):
    for root, dirs, files in os.walk(path):
      for d in dirs:
        os.chmod(os.path.join(root, d), 0o777 & ~UMASK)
      for f in files:
        full = os.path.join(root, f)
        if not os.path.islink(full):
          os.chmod(full, 0o666 & ~UMASK)


def write_file_atomic(path: str, data: bytes) -> None:
  """A local file written atomically (temp file + fsync + rename, umask permissions); a full disk is a
  UserError and leaves the old file. write_json and storage.write_bytes write through it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix='.tmp_')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    publish(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
      raise disk_error(e, f'writing {path}') from e
    raise

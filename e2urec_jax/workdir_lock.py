"""One writer per workdir: commands that write hold <workdir>/.lock while they run.

The lock is an advisory lock (flock) on that file, so the kernel releases it when its holder
exits, however it exits (Ctrl-C, kill -9, a crash): a lock file left behind blocks no one,
which is the stale-lock rule wherever locks work. The file names the holder (pid, host,
command, start time, UTC) so a refusal can say who holds it; it holds no argument of the
command (a forget request's ids never reach it).

Where the file system has no working locks (flock fails with ENOLCK/EOPNOTSUPP: some network
mounts) the file itself is the lock, created exclusively; it is stale, and taken over, when
its holder ran on this host and that process is gone. A holder on another host is never
presumed dead: the refusal names it, and the operator deletes the file once it is.

A multi-host run has one writer: process 0 takes the lock; the other processes of the same
run write nothing a command's outputs depend on, and never take it.

The holder first finishes a report a killed writer had decided to publish (eval/report_files.py) and
removes what it left half-written (staging files and folders: runtime.clean_staging), which may hold
copies of records a forget request removed.

A workdir on an object store (gs://...: storage.py) has no file locks and no atomic create:
there the lock is not taken, and one writer per workdir is the operator's rule.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket

from e2urec_jax import distributed, local_files, runtime, storage
from e2urec_jax.errors import UserError
from e2urec_jax.eval import report_files

LOCK_FILE = '.lock'
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _holder(command: str) -> dict:
  return {'pid': os.getpid(), 'host': socket.gethostname(), 'command': command,
          'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.loads(f.read() or '{}')
  except (OSError, ValueError):
    return {}


def _busy(workdir: str, holder: dict, command: str) -> UserError:
  who = (f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
         f"since {holder.get('since', '?')})") if holder else 'another command'
  return UserError(f'{workdir} is in use by {who}: one command writes to a workdir at a time; wait for it to '
                   f'finish or stop it, then run `{command}` again (or use another --workdir)')


def _alive(pid: int) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError):
    return True
  return True


@contextlib.contextmanager
def hold(workdir: str, command: str, *, primary: bool | None = None):
  """Holds the workdir's lock for the block; a UserError (one line, naming the holder) if another
  process holds it. `primary`: whether this process writes (default: process 0 of the run)."""
  if primary is None:
    primary = distributed.is_primary()
  if not primary or storage.is_remote(workdir):
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  fd, created = _open(workdir, path)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise _busy(workdir, _read(path), command) from None
  except OSError as e:
    os.close(fd)
    if e.errno not in _NO_LOCKS:
      raise
    with _exclusive_file(workdir, path, command):
      yield
    return
  try:
    _write_holder(workdir, path, fd, command, created)
    _clean(workdir)
    yield
  finally:
    with contextlib.suppress(OSError):
      os.ftruncate(fd, 0)
    os.close(fd)  # releases the lock


def _open(workdir: str, path: str) -> tuple[int, bool]:
  """(fd, created) of the lock file; a read-only or forbidden workdir is the one line every command
  gives for it (runtime.not_writable), never an OSError from here."""
  try:
    try:
      return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
      return os.open(path, os.O_RDWR), False
  except OSError as e:
    if e.errno in local_files.DISK_ERRNOS:
      raise runtime.not_writable(workdir, e) from None
    raise


def _write_holder(workdir: str, path: str, fd: int, command: str, created: bool) -> None:
  """Names the holder in the lock file. A full disk is a one-line UserError, and a lock file this
  command created is removed again: a command refused at its start leaves the workdir as it was."""
  try:
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(_holder(command)).encode())
  except OSError as e:
    if e.errno not in local_files.DISK_ERRNOS:
      raise
    if created:
      with contextlib.suppress(OSError):
        os.remove(path)  # still under our flock: no other command holds this file
    raise local_files.disk_error(e, f'writing the lock file {path}') from None


def _clean(workdir: str) -> None:
  """What a killed writer left half-written: a report it had decided to publish is put in place
  (eval/report_files.py: before the staging files are removed, as its files are staged ones), and the
  rest (runtime.clean_staging) is removed by the next holder."""
  finished = report_files.recover(workdir)
  if finished:
    print(f'finished publishing the report an interrupted command had decided on: {", ".join(finished)}',
          flush=True)
  done = runtime.clean_staging(workdir)
  if done:
    more = f' (and {len(done) - 1} more)' if len(done) > 1 else ''
    print(f'removed what an interrupted command left in {workdir}: {done[0]}{more}', flush=True)


@contextlib.contextmanager
def _exclusive_file(workdir: str, path: str, command: str):
  """The lock file as the lock (file systems without flock)."""
  holder = _read(path)
  if holder:
    stale = holder.get('host') == socket.gethostname() and not _alive(holder.get('pid'))
    if not stale:
      raise _busy(workdir, holder, command)
    os.remove(path)
  elif os.path.exists(path):
    os.remove(path)  # an empty file: a holder that released it, or died before writing itself in
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  except FileExistsError:
    raise _busy(workdir, _read(path), command) from None
  os.write(fd, json.dumps(_holder(command)).encode())
  os.close(fd)
  try:
    _clean(workdir)
    yield
  finally:
    with contextlib.suppress(OSError):
      os.remove(path)

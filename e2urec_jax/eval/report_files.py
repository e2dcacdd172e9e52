"""The report's files (results.json, results.md, the plots) published together: a kill at any moment
leaves the old set or the new one, never results.json of one report beside results.md of another.

Each file alone is already written whole (temp file + rename); together they need a journal:
1. every file is staged beside its final name (STAGED_PREFIX + name, written and fsynced);
2. JOURNAL names them (written atomically and fsynced): from here on the new report is decided;
3. each staged file is renamed onto its final name, results.json first;
4. the journal is removed.
`recover` is what any later command does first (workdir_lock's holder, `table`): a journal found
rolls the publish forward (the renames not yet done), and staged files without a journal are the
leftovers of a publish killed before step 2 (the old report is whole), which runtime.clean_staging
removes (their prefix is a staging one). On an object store (no rename) each file is one object
write, in the same order, without the journal.
"""
import contextlib
import os

from e2urec_jax import local_files, runtime, storage

JOURNAL = '.report_journal.json'
STAGED_PREFIX = '.tmp_report_'  # a staging prefix (runtime.STAGING_PREFIXES): leftovers are cleaned with the rest
_DECIDED = []  # the workdirs whose new report this process decided (wrote the journal of)


def decided() -> int:
  """How many new reports this process decided (wrote the journal of): once one is, an interrupt leaves it."""
  return len(_DECIDED)


def staged_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, STAGED_PREFIX + name)


def publish(workdir: str, files: dict) -> None:
  """Writes `files` ({name: bytes}, in the order they are renamed) into `workdir` as one set."""
  if storage.is_remote(workdir):
    for name, data in files.items():
      storage.write_bytes(os.path.join(workdir, name), data)
    return
  recover(workdir)  # a publish a killed command left half done is finished before this one starts
  journal, committed = os.path.join(workdir, JOURNAL), False
  try:
    for name, data in files.items():
      _stage(staged_path(workdir, name), data)
    _sync_dir(workdir)
    _DECIDED.append(workdir)  # tentatively: taken back below if the journal never landed
    _write_journal(journal, {'files': list(files)})
    committed = True
    _finish(workdir)
  except BaseException as e:
    if committed or os.path.exists(journal):  # decided: an interrupt among the renames completes them (microseconds)
      with contextlib.suppress(Exception):
        _finish(workdir)
      raise
    if workdir in _DECIDED:
      _DECIDED.remove(workdir)
    for name in files:  # nothing decided: the old report stays as it was
      with contextlib.suppress(OSError):
        os.remove(staged_path(workdir, name))
    if isinstance(e, OSError) and e.errno in local_files.DISK_ERRNOS:
      raise local_files.disk_error(e, f'writing the report in {workdir}') from e
    raise


def recover(workdir: str) -> list[str]:
  """Rolls forward the publish whose journal is in `workdir` (see the module docstring); returns the
  names it put in place ([] when there was no journal)."""
  if storage.is_remote(workdir) or not os.path.exists(os.path.join(workdir, JOURNAL)):
    return []
  return _finish(workdir)


def pending(workdir: str) -> bool:
  """A journal is in `workdir`: a publish was decided and not finished."""
  return not storage.is_remote(workdir) and os.path.exists(os.path.join(workdir, JOURNAL))


def _finish(workdir: str) -> list[str]:
  journal = os.path.join(workdir, JOURNAL)
  names = runtime.read_json(journal)['files']
  done = []
  for name in names:
    staged = staged_path(workdir, name)
    if os.path.exists(staged):  # else renamed already, before the kill
      _rename(staged, os.path.join(workdir, name))
      done.append(name)
  _sync_dir(workdir)
  _remove_journal(journal)
  return done


# The steps, one function each: tests/fault_hooks.py kills the process inside any of them.
def _stage(path: str, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _write_journal(path: str, record: dict) -> None:
  runtime.write_json(path, record)
  _sync_dir(os.path.dirname(path))


def _rename(staged: str, final: str) -> None:
  local_files.publish(staged, final)


def _remove_journal(path: str) -> None:
  os.remove(path)
  _sync_dir(os.path.dirname(path))


def _sync_dir(path: str) -> None:
  """The folder's entries (the renames) on disk, not only in the page cache."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)

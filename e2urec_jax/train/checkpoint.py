"""Resume checkpoints (orbax): trainable tree, optimizer state, best-so-far, step, bookkeeping.

Saves are synchronous and atomic (orbax writes a temp folder and renames it), so a run
killed at any moment resumes from the last finished save; a save that fails (full disk)
removes its temp folder and leaves the earlier checkpoints as they were. The frozen base
is never saved here: the metadata holds its content hash, checked on restore.

Tests fail or interrupt a save through orbax's public `temporary_path_class` option: a
subclass of `ocp.path.atomicity.AtomicRenameTemporaryPath` whose `finalize` (the commit)
raises or kills (see train/callbacks.py).

A folder on an object store (a gs://... workdir: storage.py) is staged: orbax saves and
restores in a local folder as above, each committed step is uploaded after its save (its
files, then the marker UPLOADED; steps orbax dropped are deleted from the bucket), and a new
process downloads the uploaded steps before it resumes. A preempted VM resumes from the last
uploaded step.
"""
import contextlib
import datetime
import errno
import glob
import logging
import os
import shutil
import tempfile
import threading
import traceback

import jax
import orbax.checkpoint as ocp

from e2urec_jax import distributed, storage
from e2urec_jax.errors import UserError

TMP_MARK = '.orbax-checkpoint-tmp'
UPLOADED = 'uploaded.json'  # in a step folder on an object store: written after the step's files


class ResumeCheckpoints:

  def __init__(self, directory: str, *, max_to_keep: int, base_sha256: str | None, temporary_path_class=None):
    """temporary_path_class: orbax's own when None (tests pass one that fails inside the commit)."""
    self.remote = storage.abspath(directory) if storage.is_remote(directory) else None
    self.directory = storage.staging_dir(self.remote, 'ckpt') if self.remote else os.path.abspath(directory)
    self.base_sha256 = base_sha256
    if self.remote:
      self._download()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False, cleanup_tmp_directories=True,
        temporary_path_class=temporary_path_class)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as e:
      raise UserError(f'cannot create checkpoint folder {self.directory}: {e.strerror}; '
                      'check the workdir is writable and has free space')

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    """Saves step `step`; on failure the earlier checkpoints are intact and a UserError says why."""
    meta = dict(meta, step=int(step), base_sha256=self.base_sha256)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    held = HeldMessages()
    try:
      with held:  # a failing save logs a traceback per array from orbax's threads: kept off the screen
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # orbax may wrap the OSError of a worker thread
      cause = _os_error(e)
      if cause is None:
        held.replay()
        raise
      self._remove_partial(step)
      last = self.latest_step()
      kept = f'the previous checkpoint, step {last}, is intact' if last is not None else 'no earlier checkpoint'
      details = held.save(os.path.join(os.path.dirname(self.directory), ERRORS_LOG), f'checkpoint save at step {step}')
      raise UserError(f'checkpoint save at step {step} failed in {self.directory}: {cause.strerror or cause}; '
                      f'{_fix(cause)} and rerun the same command ({kept}){details}') from e
    held.replay()
    if self.remote:  # a failed upload is a UserError (storage.py); the next save uploads what is missing
      self._upload()

  def _committed_steps(self) -> set:
    """Steps on the object store whose upload finished."""
    if not storage.isdir(self.remote):
      return set()
    return {int(name) for name in storage.listdir(self.remote)
            if name.isdigit() and storage.exists(f'{self.remote}/{name}/{UPLOADED}')}

  def _download(self) -> None:
    for step in sorted(self._committed_steps()):
      local = os.path.join(self.directory, str(step))
      if not os.path.isdir(local):
        storage.download_files(f'{self.remote}/{step}', local + TMP_MARK + '-download')
        os.remove(os.path.join(local + TMP_MARK + '-download', UPLOADED))
        os.replace(local + TMP_MARK + '-download', local)

  def _upload(self) -> None:
    """The local steps the bucket lacks, each committed by its marker; the steps orbax dropped, deleted."""
    if not distributed.is_primary():
      return
    local = {int(n) for n in os.listdir(self.directory) if n.isdigit()}
    remote = self._committed_steps()
    for step in sorted(local - remote):
      storage.rmtree(f'{self.remote}/{step}')  # what an interrupted upload left
      storage.upload_files(os.path.join(self.directory, str(step)), f'{self.remote}/{step}')
      storage.write_bytes(f'{self.remote}/{step}/{UPLOADED}', b'{}')
    for step in sorted(remote - local):
      storage.rmtree(f'{self.remote}/{step}')

  def _remove_partial(self, step: int) -> None:
    """Deletes what a failed save of `step` left (its temp folder), never a committed checkpoint."""
    for path in glob.glob(os.path.join(self.directory, f'{step}{TMP_MARK}*')):
      shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(Exception):
      self._manager.reload()

  def restore(self, abstract_state):
    """(state, meta) of the latest checkpoint; refuses one written for another base model."""
    step = self._manager.latest_step()
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if self.base_sha256 and meta.get('base_sha256') and meta['base_sha256'] != self.base_sha256:
      raise UserError(f'{self.directory} holds checkpoints of another base model (hash mismatch); '
                      'use a fresh --workdir or delete that folder')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as e:
      raise UserError(f'{self.directory}: checkpoint at step {step} does not match this model/config '
                      f'({str(e).splitlines()[0][:200]}); use a fresh --workdir or delete that folder')
    return restored['state'], meta

  def close(self):
    self._manager.close()


ERRORS_LOG = 'checkpoint_errors.log'  # beside a phase's ckpt/: what orbax logged while a save failed


class HeldMessages:
  """Holds what libraries log (logging records, uncaught exceptions of their threads) while active,
  off the screen: `replay()` shows them as they would have been shown (a save that worked, or an
  error that is not ours to explain), `save(path)` writes them to a file for a one-line error to
  name (a save that failed: orbax logs a traceback per array, hundreds of lines)."""

  def __init__(self):
    self.records, self.thread_errors = [], []

  def __enter__(self):
    held = self

    class Hold(logging.Handler):
      def emit(self, record):
        held.records.append(record)
    self._handlers, logging.root.handlers = logging.root.handlers, [Hold()]
    self._excepthook, threading.excepthook = threading.excepthook, self.thread_errors.append
    return self

  def __exit__(self, *exc):
    logging.root.handlers, threading.excepthook = self._handlers, self._excepthook
    return False

  def replay(self) -> None:
    for record in self.records:
      logging.getLogger(record.name).handle(record)
    for args in self.thread_errors:
      threading.excepthook(args)
    self.records, self.thread_errors = [], []

  def lines(self) -> list[str]:
    fmt = logging.Formatter('%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s')
    out = [fmt.format(r) for r in self.records]
    for args in self.thread_errors:
      thread = getattr(args.thread, 'name', '?')
      out.append(f'uncaught in thread {thread}:\n' + ''.join(
          traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)).rstrip())
    return out

  def save(self, path: str, what: str) -> str:
    """Appends the held messages to `path` (else to a file in the system's temp folder, as the full
    disk may refuse it); returns '; <n> messages of orbax in <file>' for the error line ('' if none)."""
    lines = self.lines()
    self.records, self.thread_errors = [], []
    if not lines:
      return ''
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    text = f'--- {stamp} {what}: {len(lines)} message(s) of orbax\n' + '\n'.join(lines) + '\n'
    fallback = os.path.join(tempfile.gettempdir(), f'e2urec_{ERRORS_LOG[:-4]}_{os.getpid()}.log')
    for target in (path, fallback):
      try:
        with open(target, 'a') as f:
          f.write(text)
        return f'; orbax\'s {len(lines)} message(s) are in {target}'
      except OSError:
        continue
    return f'; orbax\'s {len(lines)} message(s) could not be written anywhere (disk full)'


def _os_error(e: BaseException) -> OSError | None:
  """The OSError behind `e` (itself, a cause/context orbax wrapped it in, or a tensorstore
  error that quotes one), else None."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    if 'No space left on device' in str(e):
      return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def _fix(e: OSError) -> str:
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    return 'free disk space'
  return 'check the workdir is writable'

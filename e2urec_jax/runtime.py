"""Process set-up and workdir file helpers shared by every command.

Every artifact is written to a temporary name and renamed into place, so a crash
or a full disk never leaves a half-written file where a later command would read it.
"""
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile

import ml_collections
import numpy as np

from e2urec_jax import local_files, storage
from e2urec_jax.errors import UserError


def setup(*, jax_cache_dir: str = '', model_axis: int = 1, preallocate_gpu: bool = True) -> None:
  """What every command does first, before anything starts a JAX backend: XLA flags, joining a
  multi-host run when the environment asks for it (distributed.py), and JAX's persistent
  compilation cache in `jax_cache_dir` ('' = off) so a second run starts at once.

  model_axis: config.mesh.model_axis (> 1 needs a CPU scheduler flag). preallocate_gpu=False
  leaves GPU memory to others (the bench runs the PyTorch reference beside us)."""
  from e2urec_jax import distributed  # no JAX in config (config.load_saved reads through this module)
  # XLA:CPU's newer fusion emitters run our training steps ~10% slower than its classic loop
  # emitters (tiny T5 E2URec step on 2 cores: 445 -> 405 ms), and LLVM's -O1 compiles the
  # E2URec step in 2.6 s instead of 3.8 s with steps as fast (the demo's model and the tiny
  # bench's). A user's own XLA_FLAGS setting wins. Read when the backend starts, so set
  # first; only on the jaxlib line it was measured on.
  if distributed.measured_cpu_build():
    distributed.add_xla_flag('--xla_cpu_use_fusion_emitters=false')
    distributed.add_xla_flag('--xla_backend_optimization_level=1')
  if not preallocate_gpu:
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  distributed.setup(model_axis=model_axis)  # before anything starts a JAX backend
  import jax  # no JAX in config
  cache = usable_cache_dir(jax_cache_dir)
  if cache:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def usable_cache_dir(jax_cache_dir: str) -> str:
  """`jax_cache_dir` ('~' expanded), created if needed and probed with a write; '' (no cache) with a
  warning line when it cannot be written. The cache only saves compile time: no command, predict
  included, is refused for it, and the line says how to have it again."""
  cache = os.path.expanduser(jax_cache_dir or '')
  if not cache:
    return ''
  try:
    os.makedirs(cache, exist_ok=True)
    tempfile.NamedTemporaryFile(dir=cache, prefix='.probe', delete=True).close()
  except OSError as e:
    print(f'warning: the compilation cache folder {cache} cannot be written ({e.strerror or e}); running without '
          'it (every step compiles again): pass --config.jax_cache_dir=DIR on a writable disk, or '
          "--config.jax_cache_dir='' to turn the cache off", file=sys.stderr, flush=True)
    return ''
  return cache


def interactive() -> bool:
  """True when progress bars redraw in place: a terminal, or a notebook (tqdm.auto's widgets).

  Elsewhere (a log file, a pipe) every redraw is kept: library bars that last seconds are left
  out there, and the training bars update sparsely (LOG_BAR_INTERVAL_S)."""
  return sys.stderr.isatty() or 'ipykernel' in sys.modules


LOG_BAR_INTERVAL_S = 15.0  # a training bar's update interval when the output is a log, not a terminal


def ensure_writable_dir(path: str) -> str:
  """`path`, created if needed, after a probe write; else a UserError before any work starts
  (for a gs://... workdir: the missing driver or credentials, named with the fix)."""
  if storage.is_remote(path):
    storage.check_writable(path)
    return path
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'workdir {path!r} is a file, not a folder; pass a --workdir folder you can write to')
  try:
    os.makedirs(path, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=path, prefix='.probe', delete=True)
    probe.close()
  except OSError as e:
    raise not_writable(path, e)
  return path


def not_writable(path: str, e: OSError) -> UserError:
  """The one line of a workdir that cannot be written (read-only, no permission): every command's."""
  return UserError(f'workdir {path!r} is not writable ({e.strerror or e}); pass a --workdir you can write to')


def write_json(path: str, obj) -> None:
  """Atomic JSON write (write_file_atomic: temp file + fsync + rename); a full disk is a UserError and
  leaves the old file. A URL gets one object write (storage.py)."""
  data = json.dumps(obj, indent=2, sort_keys=False, default=json_default).encode()
  if storage.is_remote(path):
    storage.write_bytes(path, data)
    return
  local_files.write_file_atomic(path, data)


def read_json(path: str):
  if storage.is_remote(path):
    return json.loads(storage.read_text(path))
  with open(path) as f:
    return json.load(f)


def json_default(o):
  """json.dumps' `default` for numpy scalars and arrays, ConfigDicts and tuples."""
  if isinstance(o, (np.integer,)):
    return int(o)
  if isinstance(o, (np.floating,)):
    return float(o)
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, ml_collections.ConfigDict):
    return o.to_dict()
  if isinstance(o, tuple):
    return list(o)
  raise TypeError(f'not JSON serialisable: {type(o)}')


@contextlib.contextmanager
def atomic_dir(final: str):
  """Yields a temp dir beside `final`; on success it replaces `final`, on error it is removed.

  A full (or read-only) disk inside the block becomes a UserError; `final` is untouched.
  A crash between the two renames leaves `final`.old, which `recover_dir` puts back.
  For a URL the temp dir is local and is uploaded at the end (storage.publish_dir: no rename
  on an object store; the folder's .json markers go last).
  """
  if storage.is_remote(final):
    with _remote_atomic_dir(final) as tmp:
      yield tmp
    return
  parent = os.path.dirname(os.path.abspath(final))
  os.makedirs(parent, exist_ok=True)
  recover_dir(final)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp_' + os.path.basename(final) + '_')
  try:
    yield tmp
    if os.path.exists(final):
      old = final + '.old'
      shutil.rmtree(old, ignore_errors=True)
      os.replace(final, old)
      local_files.publish(tmp, final)
      shutil.rmtree(old, ignore_errors=True)
    else:
      local_files.publish(tmp, final)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    full = disk_full_error(e)
    if full is not None:
      raise local_files.disk_error(full, f'writing {final}') from e
    raise


@contextlib.contextmanager
def _remote_atomic_dir(final: str):
  tmp = tempfile.mkdtemp(dir=storage.staging_root(), prefix='build_')
  try:
    yield tmp
    storage.publish_dir(tmp, final)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    full = disk_full_error(e)
    if full is not None:
      raise local_files.disk_error(full, f'writing {final} (built in {tmp} before the upload)') from e
    raise
  storage.adopt_copy(final, tmp)  # the process reads what it built from here, not from the bucket


_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def disk_full_error(e: BaseException) -> OSError | None:
  """The OSError of a full or read-only disk behind `e`: itself, or one a library only quotes
  (safetensors; shutil.copytree's shutil.Error, an OSError without an errno that lists the
  errors of the files it could not copy)."""
  if isinstance(e, OSError) and e.errno is not None:
    return e if e.errno in _FULL_OR_READ_ONLY else None
  text = str(e)
  for code in _FULL_OR_READ_ONLY:
    if os.strerror(code) in text:
      return OSError(code, os.strerror(code))
  return None


def recover_dir(final: str) -> None:
  """Puts `final`.old back where a crash between atomic_dir's two renames left no `final`."""
  if storage.is_remote(final):  # nothing is renamed on an object store
    return
  old = final + '.old'
  if os.path.isdir(old):
    if os.path.exists(final):
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(old, final)


def config_to_json(config) -> dict:
  return json.loads(config.to_json_best_effort()) if hasattr(config, 'to_json_best_effort') else dict(config)


def save_config(workdir: str, config) -> None:
  write_json(os.path.join(workdir, 'config.json'), config_to_json(config))


# ------------------------------------------------------------------ staging leftovers
# What a command writes before renaming it into place, by the names the code gives it: write_file_atomic's
# and atomic_dir's '.tmp_*' (atomic_dir: '.tmp_<name>_*'; models/api.py: '.tmp_model_*'), '*.tmp' (stamps,
# loop's metrics rewrite), sources.py's '.part_*' downloads, ensure_writable_dir's '.probe*', orbax's
# '*.orbax-checkpoint-tmp*' step folders, atomic_dir's '<name>.old' (the replaced folder, between its two
# renames) and resume's '.data.replaced' (the data set aside while it is prepared again). A process killed
# before the rename leaves them, holding copies of whatever it was writing (a forget request's records
# included), so the next command that writes the workdir removes them (or puts a set-aside folder back).
STAGING_PREFIXES = ('.tmp_', '.part_', '.probe')
STAGING_SUFFIXES = ('.tmp',)
STAGING_MARKS = ('.orbax-checkpoint-tmp',)
ASIDE = {'.data.replaced': 'data'}  # a folder set aside -> the folder it is put back as
OLD_SUFFIX = '.old'


def _staging_kind(name: str, is_dir: bool) -> str | None:
  if name in ASIDE:
    return 'aside'
  if is_dir and name.endswith(OLD_SUFFIX) and len(name) > len(OLD_SUFFIX):
    return 'old'
  if name.startswith(STAGING_PREFIXES) or name.endswith(STAGING_SUFFIXES) or any(m in name for m in STAGING_MARKS):
    return 'tmp'
  return None


def staging_leftovers(workdir: str) -> list[str]:
  """Workdir-relative paths of the staging files and folders under `workdir` (see above); [] for a URL."""
  if storage.is_remote(workdir) or not os.path.isdir(workdir):
    return []
  out = []
  for root, dirs, files in os.walk(workdir):
    for name in list(dirs):
      if _staging_kind(name, True):
        out.append(os.path.relpath(os.path.join(root, name), workdir))
        dirs.remove(name)  # its content goes with it
    for name in files:
      if _staging_kind(name, False):
        out.append(os.path.relpath(os.path.join(root, name), workdir))
  return sorted(out)


def clean_staging(workdir: str) -> list[str]:
  """Removes the staging leftovers under `workdir` (a set-aside folder whose original is missing is put
  back instead: the crash came before its replacement was complete); returns what it removed or put
  back. Only under the workdir's lock: no other command is writing there then."""
  done = []
  for rel in staging_leftovers(workdir):
    path = os.path.join(workdir, rel)
    parent, name = os.path.split(path)
    kind = _staging_kind(name, os.path.isdir(path))
    final = os.path.join(parent, ASIDE[name]) if kind == 'aside' else path[:-len(OLD_SUFFIX)] if kind == 'old' \
        else None
    if final is not None and not os.path.exists(final):
      os.replace(path, final)
      done.append(f'{rel} (put back as {os.path.relpath(final, workdir)})')
      continue
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
    done.append(rel)
  return done


def refuse_staging(workdir: str, command: str) -> None:
  """A UserError while staging leftovers are in the workdir: `command` reports no success over them
  (they may hold records a forget request removed)."""
  left = staging_leftovers(workdir)
  if left:
    more = f' (and {len(left) - 1} more)' if len(left) > 1 else ''
    raise UserError(f'{workdir} holds {left[0]}{more}, left by an interrupted command: it may hold copies of '
                    f'records a forget request removed, so {command} reports no success; rerun the interrupted '
                    'command (every command that writes the workdir, `prepare` included, removes such leftovers '
                    'first)')

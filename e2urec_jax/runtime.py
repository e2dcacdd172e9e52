"""Process set-up and workdir file helpers shared by every command.

Every artifact is written to a temporary name and renamed into place, so a crash
or a full disk never leaves a half-written file where a later command would read it.
"""
import contextlib
import json
import os
import shutil
import tempfile

import ml_collections

from e2urec_jax.errors import UserError


def setup(config) -> None:
  """Turns on JAX's persistent compilation cache so a second run starts at once."""
  import jax
  cache = os.path.expanduser(config.get('jax_cache_dir', '') or '')
  if cache:
    os.makedirs(cache, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def ensure_writable_dir(path: str) -> str:
  try:
    os.makedirs(path, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=path, prefix='.probe', delete=True)
    probe.close()
  except OSError as e:
    raise UserError(f'workdir {path!r} is not writable ({e.strerror}); pass a --workdir you can write to')
  return path


def write_json(path: str, obj) -> None:
  """Atomic JSON write (temp file + rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix='.tmp_')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _json_default(o):
  import numpy as np
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
  """Yields a temp dir beside `final`; on success it replaces `final`, on error it is removed."""
  parent = os.path.dirname(os.path.abspath(final))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp_' + os.path.basename(final) + '_')
  try:
    yield tmp
    if os.path.exists(final):
      old = final + '.old'
      shutil.rmtree(old, ignore_errors=True)
      os.replace(final, old)
      os.replace(tmp, final)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def config_to_json(config) -> dict:
  return json.loads(config.to_json_best_effort()) if hasattr(config, 'to_json_best_effort') else dict(config)


def save_config(workdir: str, config) -> None:
  write_json(os.path.join(workdir, 'config.json'), config_to_json(config))


def load_saved_config(workdir: str):
  """The config a run was prepared with (workdir/config.json), or None."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  from e2urec_jax.config import default_config
  config = default_config()
  _update(config, read_json(path), path)
  return config


def _update(config, values: dict, source: str, prefix: str = '') -> None:
  for key, value in values.items():
    if key not in config:
      raise UserError(f'{source}: unknown config key {prefix + key!r}; remove it or fix its name')
    if isinstance(config[key], ml_collections.ConfigDict):
      _update(config[key], value, source, prefix + key + '.')
    else:
      config[key] = tuple(value) if isinstance(config[key], tuple) else value

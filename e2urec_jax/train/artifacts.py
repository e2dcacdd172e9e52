"""Published models: full weights in the Hugging Face layout, or adapters alone.

An adapter artifact never holds a base weight: it names its base (path + content hash),
and loading checks the hash so adapters are never applied to a different model.
"""
import hashlib
import json
import os

import numpy as np
from flax import traverse_util

from e2urec_jax import runtime
from e2urec_jax.errors import UserError

ADAPTERS_FILE = 'adapters.safetensors'
ADAPTER_META = 'adapter_config.json'


def content_hash(model_dir: str) -> str:
  """sha256 over the weight files of a Hugging Face folder (names sorted), cached beside them."""
  files = sorted(f for f in os.listdir(model_dir) if f.endswith('.safetensors'))
  if not files:
    raise UserError(f'{model_dir}: no *.safetensors weights; is this a model folder?')
  stamp = [(f, os.path.getsize(os.path.join(model_dir, f)), os.path.getmtime(os.path.join(model_dir, f))) for f in files]
  cache = os.path.join(model_dir, '.sha256.json')
  if os.path.exists(cache):
    cached = runtime.read_json(cache)
    if cached.get('stamp') == [list(s) for s in stamp]:
      return cached['sha256']
  h = hashlib.sha256()
  for f in files:
    with open(os.path.join(model_dir, f), 'rb') as fh:
      for block in iter(lambda: fh.read(1 << 22), b''):
        h.update(block)
  digest = h.hexdigest()
  try:
    runtime.write_json(cache, {'stamp': stamp, 'sha256': digest})
  except OSError:
    pass
  return digest


def dir_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files if not f.startswith('.'))
  return total


def save_full(model, params, path: str) -> int:
  """Full weights as a transformers-loadable folder; atomic; returns its size in bytes."""
  from e2urec_jax.models import save_pretrained
  with runtime.atomic_dir(path) as tmp:
    save_pretrained(model, params, tmp)
  return dir_bytes(path)


def load_full(path: str, dtype='float32'):
  from e2urec_jax.models import load_pretrained
  model, params, _ = load_pretrained(path, dtype=dtype)
  return model, params


def save_adapters(adapters, path: str, *, base_dir: str, lora: dict) -> int:
  """Adapters + a reference to their base; returns the artifact's size in bytes."""
  from safetensors.numpy import save_file
  flat = {'/'.join(k): np.asarray(v, dtype=np.float32) for k, v in traverse_util.flatten_dict(adapters).items()}
  meta = {'base_dir': os.path.abspath(base_dir), 'base_sha256': content_hash(base_dir), **lora}
  with runtime.atomic_dir(path) as tmp:
    save_file(flat, os.path.join(tmp, ADAPTERS_FILE))
    runtime.write_json(os.path.join(tmp, ADAPTER_META), meta)
  return dir_bytes(path)


def load_adapters(path: str, base_dir: str | None = None):
  """(adapters, meta); checks that `base_dir` (default: the recorded one) is the same base."""
  from safetensors.numpy import load_file
  meta_path = os.path.join(path, ADAPTER_META)
  if not os.path.exists(meta_path):
    raise UserError(f'{path}: no {ADAPTER_META}; not an adapter folder written by e2urec_jax')
  meta = runtime.read_json(meta_path)
  base_dir = base_dir or meta['base_dir']
  if content_hash(base_dir) != meta['base_sha256']:
    raise UserError(f'{path}: adapters were trained on a different base than {base_dir} '
                    '(sha256 mismatch); use the base they were trained on or retrain them')
  flat = load_file(os.path.join(path, ADAPTERS_FILE))
  adapters = traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in flat.items()})
  return adapters, meta


def is_adapter_dir(path: str) -> bool:
  return os.path.exists(os.path.join(path, ADAPTER_META))


def write_done(phase_dir: str, stats: dict) -> None:
  runtime.write_json(os.path.join(phase_dir, 'done.json'), stats)


def read_done(phase_dir: str):
  path = os.path.join(phase_dir, 'done.json')
  return runtime.read_json(path) if os.path.exists(path) else None


def dumps(obj) -> str:
  return json.dumps(obj, default=runtime._json_default)

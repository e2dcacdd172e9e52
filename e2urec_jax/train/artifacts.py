"""Published models: full weights in the Hugging Face layout, or adapters alone.

An adapter artifact never holds a base weight: it names its base (path + content hash),
and loading checks the hash so adapters are never applied to a different model.
"""
import hashlib
import json
import os

from flax import traverse_util
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from e2urec_jax import runtime, stamps, storage
from e2urec_jax.errors import UserError
from e2urec_jax.models import load_pretrained, lora, save_pretrained
from e2urec_jax.train import registry

ADAPTERS_FILE = 'adapters.safetensors'
ADAPTER_META = 'adapter_config.json'


def rerun_hint(path: str) -> str:
  """What to run when the artifact at `path` (a model folder of a workdir) is corrupt."""
  parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
  if 'models' in parts:
    name = '/'.join(parts[len(parts) - parts[::-1].index('models'):])
    if name.startswith('forget_v'):
      return (f'forget version {name.split("/")[0]} cannot be trained again by `run`; restore the folder from a '
              'backup, or serve its request again on a copy of the run from before it')
    phase = name.split('/')[0] if name.split('/')[0] in registry.shard_methods() else name  # '<method>/shard<k>'
    return f'rerun `run` on this workdir: it trains phase {phase} again'
  if parts[-1] == 'pretrained':
    return 'rerun `run` on this workdir: it builds the pretrained start again'
  if 'phases' in parts:  # a forget request's own models (phases/forget_v<N>/<phase>/model)
    return 'rerun the command that trained it'
  return 'use an intact copy of this model'


def verify(model_dir: str, fix: str | None = None) -> None:
  """stamps.Corrupt naming the file (and what to rerun) when a published model's files differ from their stamp.
  (A folder on an object store is checked by its markers instead: storage.py.)"""
  if not storage.is_remote(model_dir):
    stamps.verify(model_dir, fix or rerun_hint(model_dir))


def content_hash(model_dir: str) -> str:
  """sha256 over the weight files of a Hugging Face folder (names sorted), cached beside them."""
  files = sorted(f for f in storage.listdir(model_dir) if f.endswith('.safetensors'))
  if not files:
    raise UserError(f'{model_dir}: no *.safetensors weights; is this a model folder?')
  verify(model_dir)  # a damaged file is named as such, not taken for another base
  stamp = [(f, *storage.stamp(os.path.join(model_dir, f))) for f in files]
  cache = os.path.join(model_dir, '.sha256.json')
  if storage.exists(cache):
    cached = runtime.read_json(cache)
    if cached.get('stamp') == [list(s) for s in stamp]:
      return cached['sha256']
  h = hashlib.sha256()
  local = storage.local_copy(model_dir)  # a URL's folder is downloaded once: loading it reuses the copy
  for f in files:
    with open(os.path.join(local, f), 'rb') as fh:
      for block in iter(lambda: fh.read(1 << 22), b''):
        h.update(block)
  digest = h.hexdigest()
  try:
    runtime.write_json(cache, {'stamp': stamp, 'sha256': digest})
  except (OSError, UserError):  # only a cache
    pass
  return digest


def dir_bytes(path: str) -> int:
  return sum(size for rel, size in storage.files_under(path).items() if not os.path.basename(rel).startswith('.'))


def save_full(model, params, path: str, fingerprint: dict | None = None) -> int:
  """Full weights as a transformers-loadable folder (with its stamp, and `fingerprint` if given:
  train/fingerprint.py); atomic; returns its size in bytes."""
  with runtime.atomic_dir(path) as tmp:
    save_pretrained(model, params, tmp)
    if fingerprint is not None:
      runtime.write_json(os.path.join(tmp, 'fingerprint.json'), fingerprint)
    stamps.write(tmp)
  return dir_bytes(path)


def load_full(path: str, dtype='float32'):
  verify(path)
  model, params, _ = load_pretrained(path, dtype=dtype)
  return model, params


def save_adapters(adapters, path: str, *, base_dir: str, lora: dict) -> int:
  """Adapters + a reference to their base; returns the artifact's size in bytes."""
  flat = {'/'.join(k): np.asarray(v, dtype=np.float32) for k, v in traverse_util.flatten_dict(adapters).items()}
  meta = {'base_dir': storage.abspath(base_dir), 'base_sha256': content_hash(base_dir), **lora}
  with runtime.atomic_dir(path) as tmp:
    save_file(flat, os.path.join(tmp, ADAPTERS_FILE))
    runtime.write_json(os.path.join(tmp, ADAPTER_META), meta)
    stamps.write(tmp)
  return dir_bytes(path)


def load_adapters(path: str, base_dir: str | None = None, *, expect: dict | None = None):
  """(adapters, meta); checks that `base_dir` (default: the recorded one) is the same base.

  The rank stored in the tensors must be the one the folder records, and, when `expect`
  (a run's LoRA settings: r, alpha, targets) is given, the one the run is configured with:
  the adapter scale alpha / r is a property of the running model, so adapters of another
  rank would run silently at the wrong scale (or not fit the teachers they are stacked with).
  """
  meta_path = os.path.join(path, ADAPTER_META)
  if not storage.exists(meta_path):
    raise UserError(f'{path}: no {ADAPTER_META}; not an adapter folder written by e2urec_jax')
  verify(path)
  meta = runtime.read_json(meta_path)
  base_dir = base_dir or meta['base_dir']
  if not storage.isdir(base_dir):
    raise UserError(f'{path}: the base model {base_dir} these adapters were trained on is gone; '
                    'restore it or retrain the adapters')
  if content_hash(base_dir) != meta['base_sha256']:
    raise UserError(f'{path}: adapters were trained on a different base than {base_dir} '
                    '(sha256 mismatch); use the base they were trained on or retrain them')
  flat = load_file(storage.local_copy(os.path.join(path, ADAPTERS_FILE)))
  ranks = sorted({int(v.shape[-1]) for k, v in flat.items() if k.endswith('lora_a')})
  if ranks != [int(meta['r'])]:
    raise UserError(f'{path}: {ADAPTERS_FILE} holds rank {ranks} adapters but {ADAPTER_META} says r={meta["r"]}; '
                    'the folder is inconsistent: retrain the adapters')
  check_lora(path, meta, expect)
  adapters = traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in flat.items()})
  return adapters, meta


def check_lora(path: str, meta: dict, expect: dict | None) -> None:
  """UserError when adapters recorded in `meta` do not fit a run configured with `expect`."""
  if not expect:
    return
  for key, flag in (('r', 'lora.r'), ('alpha', 'lora.alpha'), ('targets', 'lora.targets')):
    have, want = meta.get(key), expect.get(key)
    if key == 'targets':
      have, want = sorted(have or []), sorted(want or [])
    elif have is not None and want is not None:
      have, want = float(have), float(want)
    if have != want:
      shown = ','.join(meta[key]) if key == 'targets' else meta[key]
      raise UserError(f'{path}: adapters have {key}={shown} but this run is configured with '
                      f'{key}={expect[key] if key != "targets" else ",".join(expect[key])}; '
                      f'pass --config.{flag}={shown} or retrain the adapters')


def check_adapter_dir(path: str, expect: dict) -> None:
  """check_lora on an adapter folder's recorded settings, without loading it (a cheap pre-flight)."""
  if is_adapter_dir(path):
    check_lora(path, runtime.read_json(os.path.join(path, ADAPTER_META)), expect)


def is_adapter_dir(path: str) -> bool:
  return storage.exists(os.path.join(path, ADAPTER_META))


def full_weights_dir(path: str) -> str:
  """A model folder as full weights, to start the next unlearning from: `path` itself, or for
  an adapter folder its adapters merged into the base it names, saved once as <path>/merged."""
  if not is_adapter_dir(path):
    return path
  merged = os.path.join(path, 'merged')
  if not os.path.exists(os.path.join(merged, 'config.json')):
    adapters, meta = load_adapters(path)
    model, base = load_full(meta['base_dir'])
    save_full(model, jax.device_get(lora.merge(base, adapters, meta['alpha'] / meta['r'])), merged)
  return merged


def write_done(phase_dir: str, stats: dict) -> None:
  runtime.write_json(os.path.join(phase_dir, 'done.json'), stats)


def read_done(phase_dir: str):
  path = os.path.join(phase_dir, 'done.json')
  return runtime.read_json(path) if storage.exists(path) else None


def dumps(obj) -> str:
  return json.dumps(obj, default=runtime.json_default)

"""Hugging Face tensor names <-> our param tree, and safetensors files read on the host.

Our tree is derived from the model (`jax.eval_shape` of init), and every leaf maps to
one HF tensor name per layer: per-layer tensors are stacked on a leading layer axis,
Linear weights [out, in] are transposed to kernels [in, out]. Reading is host-side
(memory-mapped numpy, bf16 through ml_dtypes), so a large checkpoint is never staged
on the accelerator in the wrong dtype or twice.
"""
import json
import os
import struct

import jax
import ml_dtypes
import numpy as np

from e2urec_jax.errors import UserError
from e2urec_jax.models import families

_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
           'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}

def hf_name(family: str, path: tuple) -> str:
  """HF tensor name of a param leaf; per-layer leaves contain '{i}' for the layer index (the
  family's record holds the map: models/families.py)."""
  return families.get(family).hf_name(path)


class TensorStore:
  """The tensors of a HF folder: model.safetensors or a sharded model.safetensors.index.json."""

  def __init__(self, folder: str):
    index = os.path.join(folder, 'model.safetensors.index.json')
    single = os.path.join(folder, 'model.safetensors')
    if os.path.exists(index):
      weight_map = json.load(open(index))['weight_map']
      files = {name: os.path.join(folder, f) for name, f in weight_map.items()}
    elif os.path.exists(single):
      files = None
    else:
      others = [f for f in os.listdir(folder) if f.endswith(('.bin', '.pt', '.h5', '.msgpack'))]
      hint = f' (found {others}: re-save it with safe_serialization)' if others else ''
      raise UserError(f'{folder}: no model.safetensors or model.safetensors.index.json{hint}')
    self._headers = {}
    self._where = {}
    for path in sorted(set(files.values())) if files else [single]:
      if not os.path.exists(path):
        raise UserError(f'{folder}: shard {os.path.basename(path)} named by the index is missing')
      header, offset = _read_header(path)
      for name, info in header.items():
        if name != '__metadata__':
          self._where[name] = (path, offset, info)

  def __contains__(self, name):
    return name in self._where

  def names(self):
    return list(self._where)

  def get(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise UserError(f'checkpoint is missing tensor {name!r}')
    return _array(*self._where[name])


def read_safetensors(path: str) -> dict:
  """{name: numpy array} of one .safetensors file (memory-mapped; bf16 through ml_dtypes)."""
  header, offset = _read_header(path)
  return {name: _array(path, offset, info) for name, info in header.items() if name != '__metadata__'}


def _array(path, offset, info):
  begin, end = info['data_offsets']
  dtype = np.dtype(_DTYPES[info['dtype']])
  shape = tuple(info['shape'])
  if begin == end:
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype, mode='r', offset=offset + begin, shape=shape)


def _read_header(path):
  """(header, data offset) of a safetensors file: an 8-byte length, a JSON header of that length
  naming each tensor's dtype, shape and byte range. Anything else (random bytes, a truncated
  file) is one UserError naming the file, never an OverflowError from a huge length."""
  def bad(why):
    return UserError(f'{path} is not a readable safetensors file ({why}); write it again (save_file / save_pretrained)')
  total = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(8)
    if len(head) < 8:
      raise bad(f'{total} bytes, shorter than its 8-byte header length')
    (size,) = struct.unpack('<Q', head)
    if size > total - 8:
      raise bad(f'its header length {size} is more than the {total - 8} bytes after it')
    try:
      header = json.loads(f.read(size))
    except ValueError:
      raise bad('its header is not JSON') from None
  data = total - 8 - size
  if not isinstance(header, dict):
    raise bad('its header is not a JSON object')
  for name, info in header.items():
    if name == '__metadata__':
      continue
    try:
      begin, end = (int(x) for x in info['data_offsets'])
      count = int(np.prod([int(d) for d in info['shape']], dtype=np.int64))
    except (KeyError, TypeError, ValueError):
      raise bad(f'tensor {name[:60]!r} has no valid shape and data_offsets') from None
    dtype = _DTYPES.get(info.get('dtype'))  # a dtype we never read (fp8, ...) is only range-checked
    if not 0 <= begin <= end <= data or (dtype is not None and end - begin != count * np.dtype(dtype).itemsize):
      raise bad(f'tensor {name[:60]!r} lies outside the file or disagrees with its shape')
  return header, 8 + size


def params_from_store(family: str, store: TensorStore, abstract, dtype, num_layers: dict):
  """Numpy params shaped like `abstract` (a ShapeDtypeStruct tree) from HF tensors.
  `num_layers` maps a stack prefix ('layers', 'encoder', 'decoder') to its layer count."""
  def load(path, spec):
    keys = tuple(k.key for k in path)
    template = hf_name(family, keys)
    if '{i}' in template:
      names = [template.format(i=i) for i in range(num_layers[keys[0]])]
      shape = spec.shape[1:]
    else:
      names, shape = [template], spec.shape
    arrays = []
    for name in names:
      value = _to_ours(store.get(name), keys[-1])
      if value.shape != shape:
        hf_shape = value.T.shape if keys[-1] == 'kernel' else value.shape
        want = shape[::-1] if keys[-1] == 'kernel' else shape
        raise UserError(f'tensor {name!r} has shape {hf_shape}, the config implies {want}')
      arrays.append(value.astype(dtype))
    return np.stack(arrays) if '{i}' in template else arrays[0]
  return jax.tree_util.tree_map_with_path(load, abstract)


def params_to_hf(family: str, params) -> dict:
  """Our params -> {HF name: numpy array}, per-layer stacks split, kernels transposed."""
  out = {}
  for path, value in jax.tree_util.tree_leaves_with_path(params):
    keys = tuple(k.key for k in path)
    template = hf_name(family, keys)
    value = np.asarray(value)
    if '{i}' in template:
      for i in range(value.shape[0]):
        out[template.format(i=i)] = _to_hf(value[i], keys[-1])
    else:
      out[template] = _to_hf(value, keys[-1])
  return out


def _to_ours(x, leaf):
  return np.asarray(x).T if leaf == 'kernel' else np.asarray(x)


def _to_hf(x, leaf):
  return np.ascontiguousarray(x.T if leaf == 'kernel' else x)

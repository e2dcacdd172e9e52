"""Our LoRA adapters <-> a Hugging Face PEFT adapter folder, both ways.

PEFT's layout: `adapter_model.safetensors` with one pair of tensors per adapted Linear,
`base_model.model.<HF module>.lora_A.weight [r, d_in]` and `...lora_B.weight [d_out, r]`,
and `adapter_config.json` (peft_type LORA, r, lora_alpha, target_modules, ...). Ours:
per-layer stacks `lora_a [layers, d_in, r]`, `lora_b [layers, r, d_out]` at the param
paths of the targeted kernels (models/lora.py). Both compute W x + scale * B A x; PEFT's
scale is lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), ours the run's alpha / r,
so reading folds the ratio of the two into B: the loaded adapters give PEFT's logits.
HF module names come from convert.hf_name, the same map the base weights go through.
No torch here: tensors are written and read as numpy.
"""
import math
import os
import re
import struct

from flax import traverse_util
import jax
import numpy as np
from safetensors.numpy import save_file

from e2urec_jax import names, runtime, storage
from e2urec_jax.errors import UserError
from e2urec_jax.models import convert, lora
from e2urec_jax.models.api import abstract_params

WEIGHTS_FILE = 'adapter_model.safetensors'
CONFIG_FILE = 'adapter_config.json'
_KEY_PREFIX = 'base_model.model.'  # PeftModel -> LoraModel -> the transformers model
# PEFT settings (as of peft 0.21) under which the forward is more than W x + scale * B A x on
# Linear layers, or the scale differs per module: refused on read. (VeLoRA changes only the backward.)
_UNSUPPORTED = {
    'use_dora': 'DoRA magnitude vectors', 'modules_to_save': 'fully trained extra modules',
    'rank_pattern': 'per-module ranks', 'alpha_pattern': 'per-module alphas', 'fan_in_fan_out': 'Conv1D weights',
    'lora_bias': 'trained LoRA biases', 'trainable_token_indices': 'trained token embeddings',
    'layer_replication': 'replicated layers', 'target_parameters': 'LoRA on raw parameters',
    'alora_invocation_tokens': 'activated LoRA', 'use_qalora': 'QA-LoRA input pooling',
    'use_bdlora': 'block-diagonal LoRA', 'kasa_config': 'KaSA, which edits the base weights',
    'monteclora_config': 'Monte Carlo LoRA', 'arrow_config': 'Arrow routing',
}


def export_peft(model, adapters, out_dir: str, *, alpha: float, dropout: float = 0.0,
                base_model_name_or_path: str | None = None) -> int:
  """Writes `adapters` (our tree, for `model`'s family) as a PEFT folder that
  `peft.PeftModel.from_pretrained(<transformers base>, out_dir)` loads; atomic; returns its size
  in bytes. `alpha` and `dropout` are the run's lora.alpha and lora.dropout (the rank is the
  adapters'); `base_model_name_or_path` is what PEFT records as the base (a hub id or folder)."""
  with runtime.atomic_dir(out_dir) as tmp:
    write_peft(model, adapters, tmp, alpha=alpha, dropout=dropout, base_model_name_or_path=base_model_name_or_path)
  return sum(storage.files_under(out_dir).values())


def write_peft(model, adapters, folder: str, *, alpha: float, dropout: float = 0.0,
               base_model_name_or_path: str | None = None) -> None:
  """export_peft's two files, written into the existing `folder` (not atomically: the caller's temp folder)."""
  family = model.family
  modules = _hf_modules(family, abstract_params(model))
  flat = traverse_util.flatten_dict(adapters)
  tensors, ranks = {}, set()
  for path in sorted({k[:-1] for k in flat}):
    a, b = np.asarray(flat[path + ('lora_a',)], np.float32), np.asarray(flat[path + ('lora_b',)], np.float32)
    ranks.add(a.shape[-1])
    template = modules[path]
    per_layer = [(template.format(i=i), a[i], b[i]) for i in range(a.shape[0])] if '{i}' in template else [
        (template, a, b)]
    for name, a_i, b_i in per_layer:  # a_i [d_in, r], b_i [r, d_out]
      tensors[f'{_KEY_PREFIX}{name}.lora_A.weight'] = np.ascontiguousarray(a_i.T)  # [r, d_in]
      tensors[f'{_KEY_PREFIX}{name}.lora_B.weight'] = np.ascontiguousarray(b_i.T)  # [d_out, r]
  if not ranks:
    raise UserError('no adapters to export (the adapter tree is empty)')
  if len(ranks) != 1:
    raise UserError(f'cannot export adapters of mixed ranks {sorted(ranks)} (PEFT would need a rank_pattern)')
  (r,) = ranks
  adapted = [modules[p] for p in {k[:-1] for k in flat}]
  alpha = float(alpha)
  task_type = names.family(family).peft_task_type
  config = {
      'peft_type': 'LORA', 'task_type': task_type, 'base_model_name_or_path': base_model_name_or_path,
      'revision': None, 'inference_mode': True, 'r': int(r), 'lora_alpha': int(alpha) if alpha.is_integer() else alpha,
      'lora_dropout': float(dropout), 'target_modules': _peft_targets(adapted, modules.values()),
      'fan_in_fan_out': False, 'bias': 'none', 'use_rslora': False, 'use_dora': False, 'init_lora_weights': True,
      'modules_to_save': None, 'layers_to_transform': None, 'layers_pattern': None,
      'rank_pattern': {}, 'alpha_pattern': {},
  }  # the fields PEFT has read for years; the newer ones PEFT 0.21 writes all default to "off"
  save_file(tensors, os.path.join(folder, WEIGHTS_FILE), metadata={'format': 'pt'})
  runtime.write_json(os.path.join(folder, CONFIG_FILE), config)


def read_peft_config(path: str) -> dict:
  """The folder's adapter_config.json, refused (one line) unless it describes plain LoRA."""
  path = _local(path)
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise UserError(f'{path}: no {CONFIG_FILE}; not a PEFT adapter folder (PeftModel.save_pretrained writes one)')
  try:
    config = runtime.read_json(config_path)
  except ValueError as e:
    raise UserError(f'{config_path}: not valid JSON ({e}); re-save the adapters') from None
  if not isinstance(config, dict) or config.get('peft_type') != 'LORA':
    kind = config.get('peft_type') if isinstance(config, dict) else None
    raise UserError(f'{config_path}: peft_type is {kind!r}; only LORA adapters can be loaded')
  for key, what in _UNSUPPORTED.items():
    if config.get(key):
      raise UserError(f'{config_path}: {key}={config[key]!r} ({what}) is not supported; '
                      f'train plain LoRA adapters (without {key}) or merge them into the base')
  if config.get('bias', 'none') != 'none':
    raise UserError(f'{config_path}: bias={config["bias"]!r} trains the base biases; only bias="none" can be loaded')
  return config


def load_peft_adapters(path: str, model, params, *, r: int, alpha: float, targets=None):
  """Our adapter tree from a PEFT folder, for a run with LoRA rank `r`, `alpha` and (when given)
  `targets` (lora.targets names: a tuple, or the config's 'q,v' string with '' for the default).
  Every key must name a dense layer of `model` (whose `params`, concrete or abstract, fix the
  shapes), every layer of an adapted module must be present, and the rank and targets must be
  the run's: each mismatch is one UserError line naming the file, the key and the fix. B is
  rescaled by PEFT's scale / ours, so the logits are PEFT's under the run's alpha / r."""
  path = _local(path)
  config = read_peft_config(path)
  weights_path = os.path.join(path, WEIGHTS_FILE)
  if not os.path.isfile(weights_path):
    raise UserError(f'{path}: no {WEIGHTS_FILE} (older PEFT wrote adapter_model.bin: re-save it with '
                    'save_pretrained(..., safe_serialization=True))')
  file_r = int(config.get('r', 8))  # 8: PEFT's default, which it may leave out
  if file_r != int(r):
    raise UserError(f'{os.path.join(path, CONFIG_FILE)}: adapters have rank r={file_r} but this run is configured '
                    f'with r={r}; pass --config.lora.r={file_r}')
  family = model.family
  modules = _hf_modules(family, params)
  by_name = {}  # HF module name -> (our dense path, layer index or None)
  for dense, template in modules.items():
    if '{i}' in template:
      layers = _leaf(params, dense)['kernel'].shape[0]
      by_name.update({template.format(i=i): (dense, i) for i in range(layers)})
    else:
      by_name[template] = (dense, None)
  found = {}  # (our dense path, layer, 'lora_a' | 'lora_b') -> array in our orientation
  try:
    tensors = convert.read_safetensors(weights_path)
  except (OSError, ValueError, KeyError, struct.error) as e:
    raise UserError(f'{weights_path}: not a readable safetensors file ({type(e).__name__}); re-save the adapters')
  for key, value in tensors.items():
    match = re.fullmatch(re.escape(_KEY_PREFIX) + r'(.+)\.lora_([AB])\.weight', key)
    if not match or match.group(1) not in by_name:
      raise UserError(f'{weights_path}: key {key!r} names no LoRA pair on a dense layer of this {family} model; '
                      'the adapters were trained on another architecture (or with non-LoRA extras)')
    dense, layer = by_name[match.group(1)]
    kernel = _leaf(params, dense)['kernel'].shape[-2:]  # [d_in, d_out]
    want = (file_r, kernel[0]) if match.group(2) == 'A' else (kernel[1], file_r)
    if tuple(value.shape) != want:
      raise UserError(f'{weights_path}: {key!r} has shape {tuple(value.shape)} but this model needs {want}; '
                      'the adapters were trained on a base of another size')
    value = np.asarray(value, np.float32)
    if not np.isfinite(value).all():  # else the first step's loss is NaN and the loop blames the learning rate
      bad = int((~np.isfinite(value)).sum())
      raise UserError(f'{weights_path}: {key!r} holds {bad} non-finite weight(s) (NaN or inf) of {value.size}; '
                      'these adapters were saved from a run that diverged: pass another adapter folder')
    found[dense, layer, 'lora_' + match.group(2).lower()] = value.T
  adapted = sorted({k[0] for k in found})
  if isinstance(targets, str):  # 'q,v' as config.lora.targets spells it ('' = the family default)
    targets = lora.parse_targets(targets, family)
  if targets is not None:
    abstract = jax.eval_shape(lambda: lora.init_adapters(params, jax.random.key(0), int(r), tuple(targets)))
    expected = sorted({k[:-1] for k in traverse_util.flatten_dict(abstract)})
    if adapted != expected:
      have = ','.join(_shortest_suffixes(['.'.join(p) for p in adapted], ['.'.join(p) for p in modules]))
      raise UserError(f'{weights_path}: adapters target {have} but this run is configured with '
                      f'targets={",".join(targets)}; pass --config.lora.targets={have}')
  peft_scale = float(config.get('lora_alpha', 8)) / (math.sqrt(file_r) if config.get('use_rslora') else file_r)
  b_factor = np.float32(peft_scale / (float(alpha) / int(r)))
  adapters = {}
  for dense in adapted:
    layers = [None] if '{i}' not in modules[dense] else range(_leaf(params, dense)['kernel'].shape[0])
    pair = {}
    for leaf in ('lora_a', 'lora_b'):
      missing = [i for i in layers if (dense, i, leaf) not in found]
      if missing:
        name = modules[dense].format(i=missing[0])
        raise UserError(f'{weights_path}: missing {_KEY_PREFIX}{name}.lora_{leaf[-1].upper()}.weight; adapters '
                        'on only some layers (layers_to_transform) cannot be loaded: train them on every layer')
      stacked = np.stack([found[dense, i, leaf] for i in layers]) if layers != [None] else found[dense, None, leaf]
      pair[leaf] = stacked * b_factor if leaf == 'lora_b' and b_factor != 1 else stacked
    adapters[dense] = pair  # lora_a [layers, d_in, r], lora_b [layers, r, d_out]
  return traverse_util.unflatten_dict({d + (leaf,): v for d, pair in adapters.items() for leaf, v in pair.items()})


def _local(path: str) -> str:
  """A local folder with the content of `path` (a gs://... folder is downloaded: storage.py)."""
  if storage.is_remote(path) and not storage.isdir(path):
    raise UserError(f'{path}: no such folder; not a PEFT adapter folder')
  return storage.local_copy(path)


def _hf_modules(family: str, params) -> dict:
  """{our dense path: HF module name}, per-layer names with '{i}' for the layer index, e.g.
  ('encoder', 'layers', 'self_attn', 'q') -> 'encoder.block.{i}.layer.0.SelfAttention.q'."""
  flat = traverse_util.flatten_dict(params)
  return {k[:-1]: convert.hf_name(family, k)[:-len('.weight')] for k in flat if k[-1] == 'kernel'}


def _peft_targets(adapted, every):
  """PEFT's target_modules for exactly the `adapted` HF modules: names matched as dotted suffixes
  (PEFT's rule, and lora.targets'), or, when a module is told apart only by its layer path (say
  the encoder's q but not the decoder's), a regex that PEFT full-matches."""
  suffixes = _shortest_suffixes(adapted, every)
  if not any('{i}' in s for s in suffixes):
    return suffixes
  return '|'.join(re.escape(name).replace(re.escape('{i}'), r'\d+') for name in sorted(set(adapted)))


def _shortest_suffixes(chosen, every) -> list:
  """For each dotted name in `chosen`, its shortest dotted suffix that no name outside `chosen` ends with."""
  chosen = set(chosen)
  others = [n.split('.') for n in every if n not in chosen]
  out = set()
  for name in chosen:
    parts = name.split('.')
    k = next(k for k in range(1, len(parts) + 1) if all(o[-k:] != parts[-k:] for o in others))
    out.add('.'.join(parts[-k:]))
  return sorted(out)


def _leaf(tree, path):
  for key in path:
    tree = tree[key]
  return tree

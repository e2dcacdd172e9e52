"""The models' public entry points: build, load, save, and run (see docs/ARCHITECTURE.md).

transformers is used for configs (and tokenizers) only; the models are our own Flax
linen code. `forward` and `answer_logits` are pure functions of (params, adapters,
batch), so callers jit, vmap (teachers) and differentiate (adapters) them freely.
"""
import json
import os
import tempfile

import jax
import jax.numpy as jnp
from safetensors.numpy import save_file

from e2urec_jax import local_files, names, storage
from e2urec_jax.errors import UserError
from e2urec_jax.models import convert, families
from e2urec_jax.models.lora import COLLECTION
from e2urec_jax.runtime import write_json

FAMILIES = names.MODEL_TYPES  # HF model_type -> our family (names.FAMILIES; models/families.py has their records)
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'spiece.model', 'tokenizer.model', 'vocab.json')
_HUB_PATTERNS = ['*.json', '*.safetensors', '*.model', '*.txt', '*.tiktoken']


def _dtype_name(dtype) -> str:
  return jnp.dtype(dtype).name


SPEED_OPTIONS = names.SPEED_OPTIONS  # config.model's speed fields and their defaults (the original paths)


def model_options(model_config) -> dict:
  """remat and the speed options of a config's `model` section, as keyword arguments of
  `model_from_hf_config` and `load_pretrained` (a section without them gets the defaults)."""
  options = {'remat': bool(model_config.get('remat', False))}
  for key, default in SPEED_OPTIONS.items():
    options[key] = type(default)(model_config.get(key, default))
  return options


def _speed_kwargs(speed: dict) -> dict:
  unknown = set(speed) - set(SPEED_OPTIONS)
  if unknown:
    raise TypeError(f'unknown model options {sorted(unknown)}; known: {sorted(SPEED_OPTIONS)}')
  out = {k: type(SPEED_OPTIONS[k])(v) for k, v in speed.items()}
  if out.get('attention', 'einsum') not in names.ATTENTION_IMPLEMENTATIONS:
    raise UserError(f"model.attention={out['attention']!r}: one of {', '.join(names.ATTENTION_IMPLEMENTATIONS)}")
  if out.get('remat_policy', 'nothing') not in names.REMAT_POLICIES:
    raise UserError(f"model.remat_policy={out['remat_policy']!r}: one of {', '.join(names.REMAT_POLICIES)}")
  if out.get('dropout_seeds', 'bits') not in names.DROPOUT_SEEDS:
    raise UserError(f"model.dropout_seeds={out['dropout_seeds']!r}: "
                    f"{' or '.join(repr(x) for x in names.DROPOUT_SEEDS)}")
  if out.get('attention_dropout', -1.0) >= 1:
    raise UserError(f"model.attention_dropout={out['attention_dropout']!r}: below 1 (< 0 = the model's own rate)")
  return out


def model_from_hf_config(hf_config, *, dtype='float32', remat=False, param_dtype='float32', tied=None, **speed):
  """A model for a transformers config (T5Config, LlamaConfig, Qwen2Config). `dtype` is the
  compute dtype, `param_dtype` the dtype `init_params` creates; `tied` (T5 only) overrides
  whether the LM head is the shared embedding (loading decides it from the checkpoint);
  `speed`: SPEED_OPTIONS (attention, attention_dropout, remat_policy, scan_unroll, dropout_seeds)."""
  family = families.of_model_type(getattr(hf_config, 'model_type', None))
  kwargs = dict(dtype=_dtype_name(dtype), param_dtype=_dtype_name(param_dtype), remat=bool(remat),
                hf_config_json=hf_config.to_json_string(use_diff=False), **_speed_kwargs(speed))
  return family.build(hf_config, tied, **kwargs)


def _dummy_inputs(model):
  return families.of_model(model).dummy_inputs()


def init_params(model, rng):
  """Fresh params with transformers' init std (T5: initializer_factor rules; Llama: normal(0.02))."""
  return jax.jit(lambda r: model.init({'params': r}, *_dummy_inputs(model))['params'])(rng)


def abstract_params(model):
  """The param tree as ShapeDtypeStructs (no memory, no compute)."""
  return jax.eval_shape(lambda: model.init({'params': jax.random.key(0)}, *_dummy_inputs(model))['params'])


def scratch_hf_config(scratch_cfg, vocab_size, pad_id, eos_id, bos_id, dropout):
  """A transformers config for a randomly initialised model from config.model.scratch."""
  family = families.get(scratch_cfg.family, 'model.scratch.family')
  return family.scratch_hf_config(scratch_cfg, vocab_size, pad_id, eos_id, bos_id, dropout)


def _resolve(name_or_path: str) -> str:
  """A local folder, a URL's folder (a gs://... workdir's model, downloaded: storage.py), or a hub
  id downloaded through huggingface_hub (a UserError when offline)."""
  if storage.is_remote(name_or_path):
    if not storage.isdir(name_or_path):
      raise UserError(f'{name_or_path}: no such folder')
    return storage.local_copy(name_or_path)
  path = os.path.expanduser(name_or_path)
  if os.path.isdir(path):
    return path
  if os.path.exists(path):
    raise UserError(f'{name_or_path}: not a directory; pass a folder with config.json and model.safetensors')
  if name_or_path.startswith(('/', '.', '~')) or name_or_path.count('/') > 1 or not name_or_path:
    raise UserError(f'{name_or_path}: no such directory')
  try:
    from huggingface_hub import snapshot_download  # heavy: huggingface_hub, to download
    return snapshot_download(name_or_path, allow_patterns=_HUB_PATTERNS)
  except Exception as e:  # offline, unknown repo, gated repo: all end here
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f'could not fetch {name_or_path!r} from the Hugging Face hub ({type(e).__name__}: {reason}); '
                    'check the id and the network, or pass a local folder with config.json and model.safetensors')


def _load_tokenizer(folder):
  if not any(os.path.exists(os.path.join(folder, f)) for f in _TOKENIZER_FILES):
    return None
  import transformers  # heavy: transformers loads torch
  try:
    return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
  except Exception as e:
    raise UserError(f'{folder}: the tokenizer files do not load ({type(e).__name__}: {e})')


def load_pretrained(name_or_path, dtype=jnp.float32, *, compute_dtype=None, remat=False, **speed):
  """(model, params, tokenizer or None) from a Hugging Face folder or hub id.

  `dtype` is the storage dtype of the params (bf16 halves a frozen base) and, unless
  `compute_dtype` is given, the compute dtype too; `speed` as in model_from_hf_config."""
  folder = _resolve(str(name_or_path))
  config_path = os.path.join(folder, 'config.json')
  if not os.path.exists(config_path):
    raise UserError(f'{folder}: no config.json (not a Hugging Face model folder)')
  with open(config_path) as f:
    model_type = json.load(f).get('model_type')
  try:
    family = families.of_model_type(model_type)
  except UserError as e:
    raise UserError(f'{config_path}: {e}') from None
  import transformers  # heavy: transformers loads torch
  hf_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
  store = convert.TensorStore(folder)
  tied = family.tied_from_store(store) if family.tied_from_store else None
  model = model_from_hf_config(hf_config, dtype=compute_dtype or dtype, remat=remat, param_dtype=dtype, tied=tied,
                               **speed)
  num_layers = family.layer_counts(model.arch)
  params = convert.params_from_store(family.name, store, abstract_params(model), jnp.dtype(dtype), num_layers)
  return model, jax.device_put(params), _load_tokenizer(folder)


def save_pretrained(model, params, path, tokenizer=None):
  """config.json + model.safetensors (+ tokenizer files) that transformers loads as it is."""
  if not model.hf_config_json:
    raise UserError('this model has no transformers config to save (build it with model_from_hf_config)')
  config = json.loads(model.hf_config_json)
  family = families.of_model(model)
  config['tie_word_embeddings'] = model.arch.tied
  if family.saved_config:
    config.update(family.saved_config(model.arch))
  config['architectures'] = [family.names.architecture(config['model_type'])]
  config['dtype'] = jax.tree.leaves(params)[0].dtype.name
  os.makedirs(path, exist_ok=True)
  stale_index = os.path.join(path, 'model.safetensors.index.json')  # would shadow the new file
  if os.path.exists(stale_index):
    os.remove(stale_index)
  fd, tmp = tempfile.mkstemp(dir=path, prefix='.tmp_model_')
  os.close(fd)
  try:
    save_file(convert.params_to_hf(model.family, params), tmp, metadata={'format': 'pt'})
    local_files.publish(tmp, os.path.join(path, 'model.safetensors'))
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  write_json(os.path.join(path, 'config.json'), config)
  if tokenizer is not None:
    tokenizer.save_pretrained(path)


def answer_token_ids(tokenizer, family: str, answer: str, prompt: str = 'Answer:') -> list:
  """The ids a model is trained to produce for `answer` ('Yes.' / 'No.'), end token included,
  derived from the tokenizer: an encoder-decoder (T5) tokenises the answer alone; a decoder-only
  model continues the prompt, so the answer is tokenised after it (' Yes' with its leading
  space, as in the training sequences). ids[0] is the token whose logit scores the answer."""
  eos = tokenizer.eos_token_id
  if names.family(family).layout == names.ENCODER_DECODER:
    ids = list(tokenizer(answer).input_ids)
  else:
    base = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    full = list(tokenizer(prompt + ' ' + answer, add_special_tokens=False).input_ids)
    if full[:len(base)] != base:
      raise UserError(f'the tokenizer merges the prompt end {prompt[-10:]!r} with the answer {answer!r}')
    ids = full[len(base):]
  if eos is not None and (not ids or ids[-1] != eos):
    ids.append(eos)
  return ids


def _variables(params, adapters):
  return {'params': params} if adapters is None else {'params': params, COLLECTION: adapters}


def dropout_rngs(dropout_rng):
  """{'dropout': key} for linen, as an 'rbg' key (XLA's RngBitGenerator). Threefry dropout
  masks over [batch, length, d] tensors cost seconds of compile time per dropout site
  (and real runtime on GPUs); the caller's key (any impl) only seeds the generator."""
  if dropout_rng is None:
    return None
  if jnp.issubdtype(dropout_rng.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(dropout_rng)) in ('rbg', 'unsafe_rbg'):  # already the fast kind
      return {'dropout': dropout_rng}
    dropout_rng = jax.random.key_data(dropout_rng)
  data = jnp.asarray(dropout_rng).astype(jnp.uint32).reshape(-1)[:2]  # [2]
  return {'dropout': jax.random.wrap_key_data(jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9)]), impl='rbg')}


def forward(model, params, input_ids, attention_mask, decoder_input_ids=None, adapters=None, dropout_rng=None):
  """fp32 logits [batch, length, vocab]: decoder positions for T5, every position for
  decoder-only. Dropout (model and adapter) is on exactly when `dropout_rng` is given."""
  return model.apply(_variables(params, adapters), input_ids, attention_mask, decoder_input_ids,
                     deterministic=dropout_rng is None, rngs=dropout_rngs(dropout_rng))


def answer_logits(model, params, batch, adapters=None, dropout_rng=None):
  """fp32 logits [batch, answers, vocab] at batch['answer_positions'], gathered before the
  LM head (a decoder-only model never builds [batch, length, vocab])."""
  decoder_ids = batch['decoder_input_ids'] if families.of_model(model).encoder_decoder else None
  return model.apply(_variables(params, adapters), batch['input_ids'], batch['attention_mask'], decoder_ids,
                     answer_positions=batch['answer_positions'], deterministic=dropout_rng is None,
                     rngs=dropout_rngs(dropout_rng))


def forward_flops(model, input_length: int, decoder_length: int = 0, head_positions=None) -> int:
  """Matmul FLOPs of one forward of one example (2 per multiply-add), attention scores
  included; the LM head runs at `head_positions` positions (default: every output position).
  The backward pass costs about twice this; for a benchmark's MFU."""
  return families.of_model(model).forward_flops(model.arch, input_length, decoder_length, head_positions)

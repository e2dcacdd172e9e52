"""`export`: a trained or unlearned model as one Hugging Face folder (adapters merged in), with its tokenizer."""
import os
import shutil

import jax

from e2urec_jax.errors import UserError
from e2urec_jax.train import artifacts, inference


def export_model(ctx, name: str, out_dir: str) -> str:
  from e2urec_jax.models import lora
  path = ctx.model_dir(name)
  if inference.is_ensemble(path):
    raise UserError(f'{name} is an ensemble of shard models; export a shard (e.g. --model={name}/shard0)')
  if artifacts.is_adapter_dir(path):
    adapters, meta = artifacts.load_adapters(path)
    _, base = artifacts.load_full(meta['base_dir'])
    params = lora.merge(base, adapters, meta['alpha'] / meta['r'])
  elif os.path.exists(os.path.join(path, 'config.json')):
    _, params = artifacts.load_full(path)
  else:
    raise UserError(f'no model {name!r} in {ctx.workdir}/models; train it first')
  artifacts.save_full(ctx.model, jax.device_get(params), out_dir)
  tokenizer_dir = os.path.join(ctx.workdir, 'tokenizer')
  source = tokenizer_dir if os.path.isdir(tokenizer_dir) else ctx.bundle.pretrained_dir
  for f in os.listdir(source):
    if 'token' in f or f.endswith('.model') or f == 'special_tokens_map.json':
      shutil.copy(os.path.join(source, f), os.path.join(out_dir, f))
  return out_dir

"""`export`: a trained or unlearned model as one Hugging Face folder (adapters merged in), with its
tokenizer; or, `--format=peft`, its adapters as a Hugging Face PEFT folder beside their base.

The PEFT export is self-contained: `<out>/` is the PEFT adapter folder (adapter_config.json,
adapter_model.safetensors) and `<out>/base/` the model the adapters were trained on (the run's
original, unmerged, in the Hugging Face layout with the tokenizer). adapter_config.json's
base_model_name_or_path is that base folder's absolute path, which AutoPeftModel reads; a copy
moved elsewhere loads with `PeftModel.from_pretrained(<the base model>, <the folder>)`.

An export replaces its whole output folder, so it writes only into a new or empty folder or one
an earlier export of the same format wrote (its .e2urec_export.json marker): never anything else,
whatever the names of the files there.
"""
import os

import jax

from e2urec_jax import runtime, stamps, storage
from e2urec_jax.errors import UserError
from e2urec_jax.models import lora, save_pretrained
from e2urec_jax.models.peft_format import write_peft
from e2urec_jax.train import artifacts, inference

FORMATS = ('merged', 'peft')
BASE_SUBDIR = 'base'  # <out>/base: the PEFT export's base model


MARKER = '.e2urec_export.json'  # in every export: {"format": ..., "model": ...}; what makes a folder replaceable


def _marker(out: str) -> dict | None:
  path = os.path.join(out, MARKER)
  if not storage.isfile(path):
    return None
  try:
    marker = runtime.read_json(path)
  except ValueError:
    return None
  return marker if isinstance(marker, dict) else None


def check_output(workdir: str, out_dir: str, fmt: str) -> None:
  """Refuses an --output that export's replacement of the whole folder would destroy: the workdir, a folder
  inside it or above it, a file, or an existing folder that is neither empty nor an earlier export of this
  format (its MARKER file, which every export writes). What the folder holds decides nothing else: no file
  name is taken as a sign that export wrote it."""
  out, work = storage.abspath(out_dir), storage.abspath(workdir)
  below, above = storage.inside(out, work), storage.inside(work, out)
  if below or above:
    where = 'the workdir' if below and above else 'inside the workdir' if below else 'a folder above the workdir'
    raise UserError(f'--output={out_dir} is {where} {work}: export replaces the whole output folder; pass a new '
                    'directory outside the workdir')
  if storage.exists(out) and not storage.isdir(out):
    raise UserError(f'--output={out_dir} is a file; export writes a folder: pass a new directory')
  if storage.isdir(out):
    names = sorted(storage.listdir(out))
    marker = _marker(out) if names else None
    if names and (marker is None or marker.get('format') != fmt):
      more = f' (and {len(names) - 1} more)' if len(names) > 1 else ''
      what = (f'is an earlier {marker.get("format")} export, not a {fmt} one' if marker is not None else
              f'has no {MARKER}, so export did not write it')
      raise UserError(f'--output={out_dir} holds {names[0]!r}{more} and {what}; export replaces the whole '
                      f'folder, so it writes only into a new or empty folder or an earlier {fmt} export: pass '
                      'another --output')


def _mark(folder: str, fmt: str, name: str) -> None:
  runtime.write_json(os.path.join(folder, MARKER), {'format': fmt, 'model': name, 'written_by': 'e2urec_jax export'})


def export_model(ctx, name: str, out_dir: str) -> str:
  check_output(ctx.workdir, out_dir, 'merged')
  path = ctx.model_dir(name)
  if inference.is_ensemble(path):
    raise UserError(f'{name} is an ensemble of shard models; export a shard (e.g. --model={name}/shard0)')
  if artifacts.is_adapter_dir(path):
    adapters, meta = artifacts.load_adapters(path)
    _, base = artifacts.load_full(meta['base_dir'])
    params = lora.merge(base, adapters, meta['alpha'] / meta['r'])
  elif storage.exists(os.path.join(path, 'config.json')):
    _, params = artifacts.load_full(path)
  else:
    raise UserError(f'no model {name!r} in {ctx.workdir}/models; train it first')
  with runtime.atomic_dir(out_dir) as tmp:  # the weights, the tokenizer and the marker land together
    save_pretrained(ctx.model, jax.device_get(params), tmp)
    _copy_tokenizer(ctx, tmp)
    _mark(tmp, 'merged', name)
    stamps.write(tmp)
  return out_dir


def export_peft_model(ctx, name: str, out_dir: str) -> str:
  """`name`'s adapters as a PEFT folder at `out_dir`, their base model at `out_dir`/base (atomic)."""
  check_output(ctx.workdir, out_dir, 'peft')
  path = ctx.model_dir(name)
  if inference.is_ensemble(path):
    raise UserError(f'{name} is an ensemble of shard models, which have no adapters; export a shard with '
                    f'--format=merged (e.g. --model={name}/shard0)')
  if not artifacts.is_adapter_dir(path):
    if storage.exists(os.path.join(path, 'config.json')):
      raise UserError(f'{name} is a full-weights model without adapters; export it with --format=merged '
                      '(PEFT folders hold LoRA adapters: e2urec, augmented, forget_v<N>)')
    raise UserError(f'no model {name!r} in {ctx.workdir}/models; train it first')
  adapters, meta = artifacts.load_adapters(path)  # checks the base is the one they were trained on
  _, base = artifacts.load_full(meta['base_dir'])
  final = storage.abspath(out_dir)
  with runtime.atomic_dir(final) as tmp:
    write_peft(ctx.model, adapters, tmp, alpha=meta['alpha'], dropout=meta.get('dropout', 0.0),
               base_model_name_or_path=os.path.join(final, BASE_SUBDIR))
    save_pretrained(ctx.model, jax.device_get(base), os.path.join(tmp, BASE_SUBDIR))
    _copy_tokenizer(ctx, os.path.join(tmp, BASE_SUBDIR))
    _mark(tmp, 'peft', name)
  return final


def _copy_tokenizer(ctx, out_dir: str) -> None:
  tokenizer_dir = os.path.join(ctx.workdir, 'tokenizer')
  source = tokenizer_dir if storage.isdir(tokenizer_dir) else ctx.bundle.pretrained_dir
  for f in storage.listdir(source):
    if 'token' in f or f.endswith('.model') or f == 'special_tokens_map.json':
      storage.copy_file(os.path.join(source, f), os.path.join(out_dir, f))

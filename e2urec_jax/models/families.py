"""One record per model family: everything the code does differently for T5 and for Llama.

A family's record is `FAMILY = Family(...)` at the bottom of its module (models/t5.py,
models/llama.py), next to the Flax module it describes; its JAX-free half, `names.FAMILIES`
(model_types, layout, LoRA targets, PEFT task type, the scratch check), is what config.py and
data/ read too. `api`, `convert`, `lora`, `peft_format` and `bench` read the record and never
compare a family's name; a name or a Hugging Face model_type no record claims is one UserError
line naming it. Adding a family: its module with its `FAMILY`, its `names.FamilyNames`, tests
(docs/ARCHITECTURE.md).
"""
import dataclasses
import importlib
from typing import Callable, Optional

import jax.numpy as jnp

from e2urec_jax import names


@dataclasses.dataclass(frozen=True)
class Family:
  """What `api`, `convert` and `bench` need of a family beyond its names (`names.FamilyNames`)."""
  names: names.FamilyNames
  build: Callable  # (transformers config, tied or None, **LanguageModel fields) -> the Flax model
  hf_name: Callable  # our param path (a tuple) -> its Hugging Face tensor name ('{i}' = the layer index)
  layer_counts: Callable  # arch -> {stack prefix of the param tree: its layer count} (convert.params_from_store)
  scratch_hf_config: Callable  # (config.model.scratch, vocab_size, pad_id, eos_id, bos_id, dropout) -> HF config
  forward_flops: Callable  # (arch, input_length, decoder_length, head_positions) -> matmul FLOPs of one example
  tied_from_store: Optional[Callable] = None  # convert.TensorStore -> whether the head is tied (None: the config says)
  saved_config: Optional[Callable] = None  # arch -> fields save_pretrained adds to config.json beyond tying

  @property
  def name(self) -> str:
    return self.names.name

  @property
  def layout(self) -> str:
    return self.names.layout

  @property
  def encoder_decoder(self) -> bool:
    return self.names.layout == names.ENCODER_DECODER

  def dummy_inputs(self) -> tuple:
    """Arguments of an init call: (input_ids, attention_mask[, decoder_input_ids])."""
    ids = jnp.ones((1, 1), jnp.int32)
    return (ids, ids, ids) if self.encoder_decoder else (ids, ids)


def get(name: str, what: str = 'model family') -> Family:
  """The record of family `name` (model.family, config.model.scratch.family); a UserError naming an unknown one."""
  light = names.family(name, what)
  record = importlib.import_module(light.module).FAMILY
  if record.names is not light:
    raise RuntimeError(f'{light.module}.FAMILY describes {record.name!r}, not {name!r}')
  return record


def of_model_type(model_type) -> Family:
  """The record of a Hugging Face model_type; a UserError naming an unsupported one."""
  return get(names.family_of_model_type(model_type).name)


def of_model(model) -> Family:
  """The record of a built model (its class's `family`)."""
  return get(model.family)


def every() -> tuple:
  """Every family's record, in names.FAMILIES' order."""
  return tuple(get(name) for name in names.FAMILY_NAMES)

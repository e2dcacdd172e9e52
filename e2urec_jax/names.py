"""The vocabularies that config.py (which imports no JAX) and the JAX code share, each written once.

Plain data and the standard library only: `config` reads these names to validate a config
before anything heavy is imported, and the readers (data/readers.py), the models
(models/families.py) and the speed options (models/api.py, attention.py, layers.py) read the
same ones, so a name cannot be accepted by one side and unknown to the other.

- data sources (`SOURCES`): each with its rating scale (and whether its profiles are MovieLens's);
- model families (`FAMILIES`): what a family is without JAX: its Hugging Face model_types and
  architectures, its layout, its default LoRA targets, its PEFT task type, the check of its
  scratch settings and the module that holds the rest of its record (models/families.py);
- speed options of config.model (`SPEED_OPTIONS` and the values each accepts);
- the `bench` command's model sizes (`BENCH_SIZES`).
docs/ARCHITECTURE.md says how to add a source or a family.
"""
import dataclasses
from typing import Callable, Optional

from e2urec_jax.errors import UserError

# ---------------------------------------------------------------- layouts (data/layouts.py)
ENCODER_DECODER = 'encoder-decoder'  # the prompt is the encoder input, the answer the decoder's (T5)
DECODER_ONLY = 'decoder-only'  # the answer follows the prompt in one sequence (Llama, Qwen, ...)
LAYOUTS = (ENCODER_DECODER, DECODER_ONLY)


# ---------------------------------------------------------------- data sources (config.data.source)
@dataclasses.dataclass(frozen=True)
class Source:
  """A data source (config.data.source): its name, its rating scale, and what its profiles are."""
  name: str
  scale: tuple  # (lowest, highest) rating, unless config.data.rating_scale declares one
  movielens_profiles: bool = False  # MovieLens user profiles, which data.profile_zip extends


_SOURCE_LIST = (
    Source('synthetic', (1, 5), movielens_profiles=True),
    Source('ml-100k', (1, 5), movielens_profiles=True),
    Source('ml-1m', (1, 5), movielens_profiles=True),
    Source('goodreads', (1, 5)),
    Source('csv', (1, 5)),
)
SOURCES = {s.name: s for s in _SOURCE_LIST}  # in the order `config.data.source`'s rule lists them
SOURCE_NAMES = tuple(SOURCES)


# ---------------------------------------------------------------- model families
def _llama_scratch_problem(s) -> Optional[str]:
  """Why config.model.scratch cannot make a Llama (None when it can): head widths must divide."""
  if s.d_model % s.num_heads == 0 and s.num_heads % s.num_kv_heads == 0:
    return None
  return (f'd_model={s.d_model} must be a multiple of num_heads={s.num_heads} and num_heads of '
          f'num_kv_heads={s.num_kv_heads}')


@dataclasses.dataclass(frozen=True)
class FamilyNames:
  """What a model family is, without JAX. models/families.py's `Family` record adds the rest
  (the Flax module, the weight-name map, the scratch config, ...) from `module`."""
  name: str  # our family name: model.family, config.model.scratch.family
  layout: str  # ENCODER_DECODER or DECODER_ONLY
  architectures: tuple  # ((Hugging Face model_type, its architectures entry in config.json), ...)
  lora_targets: tuple  # peft's default LoRA target modules (config.lora.targets = '')
  peft_task_type: str  # adapter_config.json's task_type
  config_class: str  # the transformers config class that a scratch model or a bench size builds
  module: str  # the module whose `FAMILY` is the full record (models/families.py)
  scratch_problem: Optional[Callable] = None  # config.model.scratch -> why it cannot be built, or None

  @property
  def model_types(self) -> tuple:
    return tuple(model_type for model_type, _ in self.architectures)

  def architecture(self, model_type: str) -> str:
    return dict(self.architectures)[model_type]


_FAMILY_LIST = (
    FamilyNames('t5', ENCODER_DECODER, (('t5', 'T5ForConditionalGeneration'),), ('q', 'v'), 'SEQ_2_SEQ_LM',
                'T5Config', 'e2urec_jax.models.t5'),
    FamilyNames('llama', DECODER_ONLY, (('llama', 'LlamaForCausalLM'), ('qwen2', 'Qwen2ForCausalLM')),
                ('q_proj', 'v_proj'), 'CAUSAL_LM', 'LlamaConfig', 'e2urec_jax.models.llama',
                scratch_problem=_llama_scratch_problem),
)
FAMILIES = {f.name: f for f in _FAMILY_LIST}  # every family is also a scratch family
FAMILY_NAMES = tuple(FAMILIES)
MODEL_TYPES = {t: f.name for f in _FAMILY_LIST for t in f.model_types}  # Hugging Face model_type -> family


def family(name: str, what: str = 'model family') -> FamilyNames:
  """The family called `name`, or a one-line UserError naming it (`what` names the setting)."""
  if name not in FAMILIES:
    raise UserError(f'{what} {name!r} is not supported (supported: {", ".join(FAMILY_NAMES)})')
  return FAMILIES[name]


def family_of_model_type(model_type) -> FamilyNames:
  """The family of a Hugging Face model_type, or a one-line UserError naming it (never a default)."""
  if model_type not in MODEL_TYPES:
    raise UserError(f'model_type {model_type!r} is not supported (supported: {", ".join(MODEL_TYPES)})')
  return FAMILIES[MODEL_TYPES[model_type]]


def scratch_problem(s) -> Optional[str]:
  """Why config.model.scratch `s` cannot be built (an unknown family, heads that do not divide), or None."""
  if s.family not in FAMILIES:
    return f'family {s.family!r} is not supported (supported: {", ".join(FAMILY_NAMES)})'
  check = FAMILIES[s.family].scratch_problem
  return check(s) if check else None


# ---------------------------------------------------------------- speed options (config.model)
ATTENTION_IMPLEMENTATIONS = ('einsum', 'xla', 'cudnn')  # models/attention.py
REMAT_POLICIES = ('nothing', 'dots', 'dots_all')  # models/layers.py's REMAT_POLICIES has one policy each
DROPOUT_SEEDS = ('bits', 'key')  # models/layers.Dropout
# config.model's speed fields and their defaults (the original paths); models/layers.LanguageModel.
SPEED_OPTIONS = {'attention': 'einsum', 'attention_dropout': -1.0, 'remat_policy': 'nothing', 'scan_unroll': 0,
                 'dropout_seeds': 'bits'}


# ---------------------------------------------------------------- `bench` sizes (config.bench.size)
MODEL_DROPOUT = object()  # in a BENCH_SIZES entry: config.model.dropout
# size -> (family, the transformers config's fields); config.bench.vocab > 0 replaces vocab_size.
BENCH_SIZES = {
    'tiny': ('t5', dict(vocab_size=32128, d_model=128, num_layers=2, num_heads=4, d_kv=32, d_ff=512,
                        feed_forward_proj='relu', dropout_rate=MODEL_DROPOUT)),
    'small': ('t5', dict(vocab_size=32128, d_model=512, num_layers=6, num_heads=8, d_kv=64, d_ff=2048,
                         feed_forward_proj='relu', dropout_rate=MODEL_DROPOUT)),
    'base': ('t5', dict(vocab_size=32128, d_model=768, num_layers=12, num_heads=12, d_kv=64, d_ff=3072,
                        feed_forward_proj='relu', dropout_rate=MODEL_DROPOUT)),
    'llama135m': ('llama', dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0,
                                tie_word_embeddings=True)),
}

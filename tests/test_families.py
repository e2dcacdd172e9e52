"""Model families and the shared vocabularies (e2urec_jax/names.py, models/families.py).

Each vocabulary (data sources with their scales, model families, speed options, bench sizes) is
written once, in names.py, and config.py's rules and the JAX code read that one list; an unknown
family is refused by name, never routed to another family's code."""
import ast
import os
import subprocess
import sys

import ml_collections
import pytest

from conftest import REPO
from e2urec_jax import config as config_lib
from e2urec_jax import names
from e2urec_jax.errors import UserError

# The modules that dispatch on the family: they read its record and never spell a family's name.
_DISPATCHERS = ('models/api.py', 'models/convert.py', 'models/lora.py', 'models/peft_format.py', 'bench.py',
                'data/tokenizer.py', 'data/layouts.py', 'config.py')


def _one_of(values) -> str:
  return 'one of ' + ', '.join(repr(v) for v in values)


def _gpt2_folder(tmp_path):
  import transformers
  transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50).save_pretrained(tmp_path)
  return str(tmp_path)


# ---------------------------------------------------------------- an unknown family is refused by name
def test_an_unknown_model_type_is_refused_by_name_when_loaded_and_when_prepared(tmp_path):
  from e2urec_jax.data.tokenizer import resolve_layout
  from e2urec_jax.models import load_pretrained
  folder = _gpt2_folder(tmp_path)
  for call in (lambda: load_pretrained(folder),
               lambda: resolve_layout(ml_collections.ConfigDict({'name_or_path': folder}))):
    with pytest.raises(UserError) as e:
      call()
    message = str(e.value)
    assert "model_type 'gpt2' is not supported (supported: t5, llama, qwen2)" in message
    assert '\n' not in message and folder in message


def test_an_unknown_scratch_family_is_refused_by_name_everywhere():
  from e2urec_jax.data import layouts
  from e2urec_jax.models import convert, families, lora, scratch_hf_config
  config = config_lib.default_config()
  config.model.scratch.family = 'gpt2'
  with pytest.raises(UserError, match=r"config.model.scratch.family='gpt2': must be one of 't5', 'llama'$"):
    config_lib.validate(config)
  with pytest.raises(UserError, match=r"model.scratch.family 'gpt2' is not supported \(supported: t5, llama\)$"):
    scratch_hf_config(config.model.scratch, 97, 0, 1, 2, 0.0)
  for call in (lambda: families.get('gpt2'), lambda: layouts.of_family('gpt2'),
               lambda: convert.hf_name('gpt2', ('layers', 'self_attn', 'q_proj', 'kernel')),
               lambda: lora.default_targets('gpt2'), lambda: names.family('gpt2')):
    with pytest.raises(UserError, match="'gpt2'"):
      call()


def test_dispatchers_name_no_family():
  """api, convert, lora, peft_format, bench, the tokenizer, layouts and config read a family's record:
  no string literal of theirs is a family name or a model_type (a third family cannot fall into a branch)."""
  spelled = set(names.FAMILIES) | set(names.MODEL_TYPES)
  found = []
  for rel in _DISPATCHERS:
    path = os.path.join(REPO, 'e2urec_jax', rel)
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Constant) and node.value in spelled:
        found.append((rel, node.value, node.lineno))
  # config.py's default scratch family is a value, not a branch
  assert [(rel, value) for rel, value, _ in found] == [('config.py', 't5')], found


# ---------------------------------------------------------------- one record per family
def test_every_family_has_one_record_that_the_models_read():
  from e2urec_jax.data import layouts
  from e2urec_jax.models import api, families, lora
  records = families.every()
  assert tuple(r.name for r in records) == names.FAMILY_NAMES == ('t5', 'llama')
  for record in records:
    assert record.names is names.FAMILIES[record.name]
    assert layouts.of_family(record.name) == record.layout in names.LAYOUTS
    assert lora.default_targets(record.name) == record.names.lora_targets
    for model_type in record.names.model_types:
      assert api.FAMILIES[model_type] == record.name and families.of_model_type(model_type) is record
  assert api.FAMILIES is names.MODEL_TYPES


def test_the_tokenizer_and_the_models_accept_the_same_model_types(tmp_path):
  """One list (names.MODEL_TYPES): every model_type the models load gets its family's layout, and an
  encoder-decoder model_type no family claims (mT5's, UMT5's) is refused by both."""
  import transformers
  from e2urec_jax.data.tokenizer import resolve_layout
  from e2urec_jax.models import model_from_hf_config
  for model_type, family in names.MODEL_TYPES.items():
    folder = tmp_path / model_type
    hf = transformers.AutoConfig.for_model(model_type, vocab_size=50)
    hf.save_pretrained(folder)
    layout, _ = resolve_layout(ml_collections.ConfigDict({'name_or_path': str(folder)}))
    assert layout == names.FAMILIES[family].layout
  for model_type in ('mt5', 'umt5'):
    folder = tmp_path / model_type
    hf = transformers.AutoConfig.for_model(model_type, vocab_size=50)
    hf.save_pretrained(folder)
    with pytest.raises(UserError, match=f"model_type '{model_type}' is not supported"):
      resolve_layout(ml_collections.ConfigDict({'name_or_path': str(folder)}))
    with pytest.raises(UserError, match=f"model_type '{model_type}' is not supported"):
      model_from_hf_config(hf)


def test_the_llama_head_check_is_one_check():
  from e2urec_jax.models import scratch_hf_config
  config = config_lib.default_config()
  s = config.model.scratch
  s.family, s.d_model, s.num_heads, s.num_kv_heads = 'llama', 64, 4, 3
  problem = names.scratch_problem(s)
  assert problem == 'd_model=64 must be a multiple of num_heads=4 and num_heads of num_kv_heads=3'
  with pytest.raises(UserError) as from_config:
    config_lib.validate(config)
  with pytest.raises(UserError) as from_models:
    scratch_hf_config(s, 97, 0, 1, 2, 0.0)
  assert str(from_config.value) == f'config.model.scratch: {problem}'
  assert str(from_models.value) == f'model.scratch: {problem}'
  s.family = 't5'  # T5 has its own per-head width (d_kv): no check
  assert names.scratch_problem(s) is None


# ---------------------------------------------------------------- each vocabulary is written once
def test_data_sources_are_declared_once_with_their_scales():
  from e2urec_jax.data import readers, sources
  rules = config_lib.RULES
  assert rules['data.source'].wants == _one_of(names.SOURCE_NAMES)
  assert readers.SOURCES == names.SOURCE_NAMES == tuple(names.SOURCES)
  assert tuple(readers.READERS) == names.SOURCE_NAMES  # a reader for every source, none for another
  assert tuple(sources.SCALES) == names.SOURCE_NAMES
  for source in names.SOURCES.values():
    low, high = source.scale
    assert low < high and sources.SCALES[source.name] == source.scale
    d = ml_collections.ConfigDict({'source': source.name, 'rating_scale': ()})
    assert sources.rating_range(d) == (float(low), float(high))
  assert config_lib.MOVIELENS_PROFILES == ('synthetic', 'ml-100k', 'ml-1m')
  with pytest.raises(UserError, match="config.data.source='nope': use one of synthetic"):
    sources.rating_range(ml_collections.ConfigDict({'source': 'nope', 'rating_scale': ()}))


def test_families_speed_options_and_bench_sizes_are_declared_once():
  from e2urec_jax import bench
  from e2urec_jax.models import api, attention, layers
  rules = config_lib.RULES
  assert rules['model.scratch.family'].wants == _one_of(names.FAMILY_NAMES)
  assert rules['model.attention'].wants == _one_of(names.ATTENTION_IMPLEMENTATIONS)
  assert rules['model.remat_policy'].wants == _one_of(names.REMAT_POLICIES)
  assert rules['model.dropout_seeds'].wants == _one_of(names.DROPOUT_SEEDS)
  assert rules['bench.size'].wants == _one_of(names.BENCH_SIZES)
  assert attention.IMPLEMENTATIONS is names.ATTENTION_IMPLEMENTATIONS
  assert tuple(layers.REMAT_POLICIES) == names.REMAT_POLICIES
  assert api.SPEED_OPTIONS is names.SPEED_OPTIONS
  model = config_lib.default_config().model
  assert {k: model[k] for k in names.SPEED_OPTIONS} == names.SPEED_OPTIONS  # config's defaults are the originals
  for size, (family, _) in names.BENCH_SIZES.items():
    hf = bench.hf_config(size, 0)
    assert names.MODEL_TYPES[hf.model_type] == family


def test_the_names_modules_import_no_jax():
  code = ('import sys, e2urec_jax.names, e2urec_jax.config, e2urec_jax.data.layouts; '
          "assert 'jax' not in sys.modules and 'flax' not in sys.modules, 'jax imported'")
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)

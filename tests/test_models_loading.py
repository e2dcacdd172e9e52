"""Loading, saving and building models: errors that name the problem, sharded files,
tokenizers, scratch models, dropout."""
import json
import os

import huggingface_hub.constants
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file, save_file

import model_configs as cfg
from e2urec_jax.errors import UserError
from e2urec_jax.models import (answer_token_ids, forward, forward_flops, init_params, load_pretrained,
                               model_from_hf_config, save_pretrained, scratch_hf_config)
from e2urec_jax.models.attention import attention
from e2urec_jax.models.t5 import relative_position_buckets


@pytest.fixture(scope='module')
def t5_dir(tmp_path_factory):
  """A T5 v1.1 checkpoint in the Hugging Face layout, written by our save_pretrained (no PyTorch; the
  PyTorch-written ones are test_models_equivalence.py's)."""
  model = model_from_hf_config(cfg.t5_config('v1.1'))
  path = str(tmp_path_factory.mktemp('t5'))
  save_pretrained(model, init_params(model, jax.random.key(0)), path)
  return path


def _copy(src, dst, drop=(), config_update=None):
  os.makedirs(dst, exist_ok=True)
  tensors = load_file(os.path.join(src, 'model.safetensors'))
  save_file({k: v for k, v in tensors.items() if k not in drop}, os.path.join(dst, 'model.safetensors'),
            metadata={'format': 'pt'})
  config = json.load(open(os.path.join(src, 'config.json')))
  config.update(config_update or {})
  json.dump(config, open(os.path.join(dst, 'config.json'), 'w'))
  return str(dst)


def test_missing_tensor_is_named(t5_dir, tmp_path):
  name = 'decoder.block.1.layer.1.EncDecAttention.v.weight'
  with pytest.raises(UserError, match=name.replace('.', r'\.')):
    load_pretrained(_copy(t5_dir, tmp_path, drop=(name,)))


def test_unknown_model_type_is_named(t5_dir, tmp_path):
  with pytest.raises(UserError, match="'gpt_neox'.*not supported"):
    load_pretrained(_copy(t5_dir, tmp_path, config_update={'model_type': 'gpt_neox'}))


def test_wrong_shape_is_named(t5_dir, tmp_path):
  with pytest.raises(UserError, match=r"weight.*has shape"):
    load_pretrained(_copy(t5_dir, tmp_path, config_update={'vocab_size': 99}))


def test_bad_paths_and_offline_hub_give_user_errors(tmp_path, monkeypatch):
  with pytest.raises(UserError, match='no such directory'):
    load_pretrained(str(tmp_path / 'nope' / 'deeper'))
  with pytest.raises(UserError, match='no config.json'):
    load_pretrained(str(tmp_path))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'cache'))
  with pytest.raises(UserError, match="could not fetch 'someone/tiny-model'"):
    load_pretrained('someone/tiny-model')


def test_sharded_checkpoint_and_tokenizer(t5_dir, tmp_path):
  tensors = load_file(os.path.join(t5_dir, 'model.safetensors'))
  names = sorted(tensors)
  weight_map = {}
  for shard, part in enumerate((names[::2], names[1::2])):
    fname = f'model-0000{shard + 1}-of-00002.safetensors'
    save_file({k: tensors[k] for k in part}, tmp_path / fname, metadata={'format': 'pt'})
    weight_map.update({k: fname for k in part})
  json.dump({'metadata': {}, 'weight_map': weight_map}, open(tmp_path / 'model.safetensors.index.json', 'w'))
  json.dump(json.load(open(os.path.join(t5_dir, 'config.json'))), open(tmp_path / 'config.json', 'w'))
  tokenizer = _tiny_tokenizer()
  tokenizer.save_pretrained(tmp_path)
  model, params, tok = load_pretrained(str(tmp_path))
  _, ref_params, _ = load_pretrained(t5_dir)
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  assert tok is not None and tok('a b').input_ids == tokenizer('a b').input_ids


def _tiny_tokenizer():
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {'<pad>': 0, '</s>': 1, '<unk>': 2, 'a': 3, 'b': 4}
  tok = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='</s>',
                                              unk_token='<unk>')


@pytest.mark.slow
def test_bf16_storage_loads_and_saves(t5_dir, tmp_path):
  """Saved bf16 weights load in PyTorch (transformers) as bf16."""
  import torch
  model, params, _ = load_pretrained(t5_dir, dtype=jnp.bfloat16)
  assert model.dtype == 'bfloat16' and all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  save_pretrained(model, params, tmp_path)
  back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path)
  assert back.shared.weight.dtype == torch.bfloat16
  model32, _, _ = load_pretrained(t5_dir, dtype=jnp.bfloat16, compute_dtype=jnp.float32)
  assert model32.dtype == 'float32' and model32.param_dtype == 'bfloat16'


def _scratch(family, **kw):
  s = ml_collections.ConfigDict(dict(family=family, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                     d_ff=64, d_kv=8, feed_forward_proj='relu'))
  s.update(kw)
  return s


@pytest.mark.slow
@pytest.mark.parametrize('family,ffp', [('t5', 'relu'), ('t5', 'gated-gelu'), ('llama', 'relu')])
def test_scratch_model_init_and_save_round_trip(family, ffp, tmp_path):
  """Our scratch model, saved, gives the same logits in PyTorch (transformers)."""
  import models_testlib as lib
  hf = scratch_hf_config(_scratch(family, feed_forward_proj=ffp), vocab_size=97, pad_id=0, eos_id=1, bos_id=2,
                         dropout=0.1)
  if family == 't5':
    assert hf.decoder_start_token_id == 0 and hf.dropout_rate == 0.1
  model = model_from_hf_config(hf)
  assert model.family == family
  params = init_params(model, jax.random.key(0))
  if family == 't5':  # transformers' init: q std (d_model * d_kv) ** -0.5, shared std 1
    q = np.asarray(params['encoder']['layers']['self_attn']['q']['kernel'])
    assert 0.5 < q.std() * (32 * 8) ** 0.5 < 1.5 and 0.8 < np.asarray(params['shared']['embedding']).std() < 1.2
    assert ('lm_head' in params) == (ffp == 'gated-gelu')
  ids, mask = lib.padded_batch(97, length=12)
  dec = lib.decoder_ids(97, length=3) if family == 't5' else None
  ours = np.asarray(forward(model, params, ids, mask, dec))
  save_pretrained(model, params, tmp_path)
  auto = transformers.T5ForConditionalGeneration if family == 't5' else transformers.AutoModelForCausalLM
  ref = lib.torch_logits(auto.from_pretrained(tmp_path).eval(), ids, mask, dec)
  rows = mask == 1 if family == 'llama' else slice(None)
  assert np.abs(ours - ref)[rows].max() <= 1e-4


def test_scratch_llama_rejects_bad_heads():
  with pytest.raises(UserError, match='num_kv_heads'):
    scratch_hf_config(_scratch('llama', num_kv_heads=3), 97, 0, 1, 2, 0.0)
  with pytest.raises(UserError, match="'gpt'"):
    scratch_hf_config(_scratch('gpt'), 97, 0, 1, 2, 0.0)


@pytest.mark.slow  # forward and gradient with dropout: 8 s of compiles; the fast tier stays under 90 s
def test_model_dropout_only_with_rng(t5_dir):
  model, params, _ = load_pretrained(t5_dir)
  assert model.arch.dropout_rate == 0.1
  ids, mask = cfg.padded_batch(model.arch.vocab_size, length=10)
  dec = cfg.decoder_ids(model.arch.vocab_size)
  run = jax.jit(lambda p, rng: forward(model, p, ids, mask, dec, dropout_rng=rng))
  plain = forward(model, params, ids, mask, dec)
  again = forward(model, params, ids, mask, dec)
  drop1, drop2 = run(params, jax.random.key(1)), run(params, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(again))
  assert np.abs(np.asarray(plain - drop1)).max() > 1e-3 and np.abs(np.asarray(drop1 - drop2)).max() > 1e-3
  grads = jax.jit(jax.grad(lambda p: jnp.sum(run(p, jax.random.key(1)))))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_attention_dropout_path_matches_fused_path():
  k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(k1, (2, 5, 4, 8))
  k = jax.random.normal(k2, (2, 7, 2, 8))
  v = jax.random.normal(k3, (2, 7, 2, 8))
  bias = jax.random.normal(k4, (1, 4, 5, 7))
  key_mask = jnp.ones((2, 7), bool).at[1, 4:].set(False)
  fused = attention(q, k, v, bias=bias, key_mask=key_mask, scale=0.3)
  manual = attention(q, k, v, bias=bias, key_mask=key_mask, scale=0.3, dropout=lambda p: p)
  np.testing.assert_allclose(np.asarray(manual), np.asarray(fused), atol=1e-5)


@pytest.mark.slow
def test_relative_position_buckets_match_transformers():
  import torch
  from transformers.models.t5.modeling_t5 import T5Attention
  for bidirectional in (True, False):
    ours = relative_position_buckets(300, 300, bidirectional, 32, 128)
    rel = torch.arange(300)[None, :] - torch.arange(300)[:, None]
    ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    np.testing.assert_array_equal(ours, ref.numpy())


def test_forward_flops_counts_matmuls():
  hf = transformers.T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
  model = model_from_hf_config(hf)
  flops = forward_flops(model, 256, 3, head_positions=3)
  # ~2 * (110M non-embedding-ish params) * tokens, order of magnitude
  assert 4e10 < flops < 8e10


def test_answer_token_ids_from_tokenizers():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator(['Answer: Yes.', 'Answer: No.'] * 50,
                          trainers.BpeTrainer(vocab_size=300, special_tokens=['<eos>'],
                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token='<eos>')
  yes = answer_token_ids(tok, 'llama', 'Yes.', prompt='Will they like it? Answer:')
  assert tok.decode(yes[:1]) == ' Yes' and yes[-1] == tok.eos_token_id
  assert answer_token_ids(tok, 'llama', 'No.')[0] != yes[0]
  t5_tok = _tiny_tokenizer()
  assert answer_token_ids(t5_tok, 't5', 'a b') == [3, 4, 1]

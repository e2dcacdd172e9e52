"""LoRA as a parameter-tree transform: exactness at B = 0, merge, gradients, bf16 bases, dropout, targets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

import model_configs as lib
from e2urec_jax.errors import UserError
from e2urec_jax.models import abstract_params, answer_logits, forward, init_params, lora, model_from_hf_config


@pytest.fixture(scope='module', params=['t5', 'llama'])
def setup(request):
  """(model configured with r=4, alpha=8; params; adapters with nonzero B; batch dict)."""
  if request.param == 't5':
    hf = lib.t5_config('v1.0')
  else:
    hf = lib.llama_config('llama3_gqa')
  model = lora.configure(model_from_hf_config(hf), r=4, alpha=8, dropout=0.1)
  params = lib_params(model)
  adapters = lora.init_adapters(params, jax.random.key(1), 4, lora.default_targets(model.family))
  ids, mask = lib.padded_batch(hf.vocab_size, length=16)
  batch = {'input_ids': ids, 'attention_mask': mask,
           'answer_positions': np.stack([mask.sum(1) - 1, mask.sum(1) - 1], 1).astype(np.int32)}
  if model.family == 't5':
    batch['decoder_input_ids'] = lib.decoder_ids(hf.vocab_size, length=2)
    batch['answer_positions'] = np.tile(np.arange(2, dtype=np.int32), (3, 1))
  return model, params, adapters, batch


def lib_params(model):
  return init_params(model, jax.random.key(0))


def _nonzero_b(adapters, seed=2):
  leaves, treedef = jax.tree.flatten_with_path(adapters)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  out = [0.2 * jax.random.normal(k, v.shape) if p[-1].key == 'lora_b' else v for k, (p, v) in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, out)


def _run(model, params, batch, adapters=None):
  # Jitted: run eagerly, a forward compiles each of its ops on its own (seconds with a cold cache).
  return _jit_forward(model, params, batch['input_ids'], batch['attention_mask'], batch.get('decoder_input_ids'),
                      adapters)


_jit_forward = jax.jit(lambda model, *args: forward(model, *args[:4], adapters=args[4]), static_argnums=0)


def test_adapter_tree_mirrors_targeted_kernels(setup):
  model, params, adapters, _ = setup
  if model.family == 't5':  # self- and cross-attention q and v, like peft
    assert set(adapters['decoder']['layers']) == {'self_attn', 'cross_attn'}
    assert set(adapters['encoder']['layers']['self_attn']) == {'q', 'v'}
    q = adapters['decoder']['layers']['cross_attn']['q']
    kernel = params['decoder']['layers']['cross_attn']['q']['kernel']
  else:
    assert set(adapters['layers']['self_attn']) == {'q_proj', 'v_proj'}
    q = adapters['layers']['self_attn']['q_proj']
    kernel = params['layers']['self_attn']['q_proj']['kernel']
  assert q['lora_a'].shape == kernel.shape[:-1] + (4,) and q['lora_b'].shape == (kernel.shape[0], 4, kernel.shape[-1])
  assert q['lora_a'].dtype == jnp.float32 and not np.any(np.asarray(q['lora_b']))
  assert model.lora_scale == 2.0 and model.lora_dropout == 0.1


def test_zero_b_equals_base_exactly(setup):
  model, params, adapters, batch = setup
  np.testing.assert_array_equal(np.asarray(_run(model, params, batch, adapters)),
                                np.asarray(_run(model, params, batch)))


def test_merge_equals_adapter_forward(setup):
  model, params, adapters, batch = setup
  adapters = _nonzero_b(adapters)
  with_adapters = np.asarray(_run(model, params, batch, adapters))
  merged = lora.merge(params, adapters, model.lora_scale)
  assert np.abs(with_adapters - np.asarray(_run(model, params, batch))).max() > 1e-2  # adapters matter
  np.testing.assert_allclose(np.asarray(_run(model, merged, batch)), with_adapters, atol=1e-4)
  assert lora.count_params(merged) == lora.count_params(params)
  np.testing.assert_array_equal(np.asarray(_run(model, params, batch)),  # the base tree is not modified
                                np.asarray(_run(model, params, batch, jax.tree.map(jnp.zeros_like, adapters))))


def test_gradients_flow_only_to_adapters(setup):
  model, params, adapters, batch = setup
  before = jax.tree.map(np.asarray, params)

  def loss(a):
    return jnp.mean(answer_logits(model, params, batch, adapters=a, dropout_rng=jax.random.key(3)) ** 2)

  grads = jax.jit(jax.grad(loss))(adapters)
  assert jax.tree.structure(grads) == jax.tree.structure(adapters)
  b_grads = [g for p, g in jax.tree.flatten_with_path(grads)[0] if p[-1].key == 'lora_b']
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in b_grads)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), before)


@pytest.mark.slow  # compiles the model in new dtypes/paths: 6-8 s; the fast tier stays under 90 s
def test_bf16_base_with_fp32_adapters(setup):
  model, params, adapters, batch = setup
  adapters = _nonzero_b(adapters)
  ref = np.asarray(_run(model, params, batch, adapters))
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  student = model.clone(dtype='bfloat16')
  out = np.asarray(_run(student, bf16, batch, adapters))
  assert out.dtype == np.float32
  assert np.abs(out - ref).max() <= 0.05 * np.abs(ref).max() + 0.05
  grads = jax.grad(lambda a: jnp.sum(answer_logits(student, bf16, batch, adapters=a)))(adapters)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


@pytest.mark.slow  # compiles the model in new dtypes/paths: 6-8 s; the fast tier stays under 90 s
def test_adapter_dropout_only_with_rng(setup):
  model, params, adapters, batch = setup
  adapters = _nonzero_b(adapters)
  quiet = model.clone(lora_dropout=0.5)
  a = answer_logits(quiet, params, batch, adapters=adapters)
  b = answer_logits(quiet, params, batch, adapters=adapters)
  c = answer_logits(quiet, params, batch, adapters=adapters, dropout_rng=jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4


def test_t5_base_default_targets_count_like_peft():
  hf = transformers.T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
  params = abstract_params(model_from_hf_config(hf))
  adapters = jax.eval_shape(lambda: lora.init_adapters(params, jax.random.key(0), 16, lora.default_targets('t5')))
  assert lora.count_params(adapters) == 1_769_472
  assert 0.007 < lora.trainable_fraction(adapters, params) < 0.008


def test_targets_parse_and_unknown_target_fails(setup):
  model, params, _, _ = setup
  assert lora.parse_targets('', 't5') == ('q', 'v') and lora.parse_targets('q, k', 't5') == ('q', 'k')
  with pytest.raises(UserError, match='nope'):
    lora.init_adapters(params, jax.random.key(0), 4, ('nope',))
  if model.family == 't5':  # a dotted suffix picks one attention only
    only_cross = lora.init_adapters(params, jax.random.key(0), 4, ('cross_attn.q',))
    assert set(only_cross) == {'decoder'} and set(only_cross['decoder']['layers']) == {'cross_attn'}

"""The attention implementations (models/attention.py) against the original path, and remat.

CPU, fp32: 'xla' (and 'cudnn', which runs 'xla' off a GPU) must give the original 'einsum'
path's logits and gradients (full params and LoRA adapters) within fp32 rounding, with and
without padding, with T5's position bias, with attention dropout on (same masks) and off; remat
must give the same gradients whatever it keeps. Tolerances sit ~10x above the measured
differences (printed with -s). The fast tier (-m 'not slow') runs the attention functions and a
few model cases; the other kinds and settings, and the comparison with transformers, are slow.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_configs as cfg
from e2urec_jax.errors import UserError
from e2urec_jax.models import answer_logits, forward, init_params, load_pretrained, lora, model_from_hf_config
from e2urec_jax.models import attention as attn
from e2urec_jax.models.layers import Dropout

KINDS = ['t5:v1.1', 'llama:llama3_gqa']  # the attention code is one per family; v1.0 differs in its MLP only


def _cases(combos, fast):
  """pytest params for `combos` (tuples); those not in `fast` are marked slow: the fast tier
  keeps one representative per behaviour (-m 'not slow' runs them, the full suite all)."""
  return [pytest.param(*c, marks=() if c in fast else pytest.mark.slow) for c in combos]


def _hf_config(kind):
  family, name = kind.split(':')
  return cfg.t5_config(name) if family == 't5' else cfg.llama_config(name)


def _max_diff(a, b):
  return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _scale(tree):
  return max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------ the attention function
def _qkv(seed=0, b=3, t=12, s=12, n=4, kv=2, h=8):
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(k1, (b, t, n, h))
  k = jax.random.normal(k2, (b, s, kv, h))
  v = jax.random.normal(k3, (b, s, kv, h))
  bias = 2.0 * jax.random.normal(k4, (1, n, t, s))
  key_mask = jnp.arange(s)[None, :] < jnp.array([s, s // 2 + 1, 3])[:b, None]  # right padding
  return q, k, v, bias, key_mask


@pytest.mark.parametrize('causal', [False, True])  # all fast: after the first (~4 s of eager warm-up) < 0.5 s each
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('with_mask', [False, True])
def test_fused_paths_equal_the_materialised_einsum(causal, with_bias, with_mask):
  """Values and gradients (q, k, v, bias): the original einsum (probabilities materialised, here
  with an identity dropout), 'xla' (jax.nn.dot_product_attention, dense mask), the key-length
  form cuDNN gets (run by XLA here) and the compute-dtype materialised path."""
  q, k, v, bias, key_mask = _qkv()
  bias = bias if with_bias else None
  key_mask = key_mask if with_mask else None
  identity = lambda p: p
  variants = {
      'einsum': lambda q, k, v, b: attn.attention(q, k, v, bias=b, key_mask=key_mask, causal=causal, scale=0.3,
                                                  dropout=identity, implementation='einsum'),
      'xla': lambda q, k, v, b: attn.attention(q, k, v, bias=b, key_mask=key_mask, causal=causal, scale=0.3,
                                               implementation='xla'),
      'lengths': lambda q, k, v, b: attn.fused_attention(q, k, v, bias=b, key_mask=key_mask, causal=causal, scale=0.3,
                                                         implementation='xla'),
      'materialised': lambda q, k, v, b: attn.attention(q, k, v, bias=b, key_mask=key_mask, causal=causal,
                                                        scale=0.3, dropout=identity, implementation='xla'),
  }
  cotangent = jax.random.normal(jax.random.key(9), q.shape)

  def value_and_grads(fn):
    loss = lambda q, k, v, b: jnp.sum(fn(q, k, v, b) * cotangent)
    argnums = (0, 1, 2, 3) if bias is not None else (0, 1, 2)
    return fn(q, k, v, bias), jax.grad(loss, argnums)(q, k, v, bias)

  want_out, want_grads = value_and_grads(variants.pop('einsum'))
  for name, fn in variants.items():
    out, grads = value_and_grads(fn)
    d_out, d_grad = _max_diff(out, want_out), _max_diff(grads, want_grads)
    print(f'{name} causal={causal} bias={with_bias} mask={with_mask}: out {d_out:.1e}, grads {d_grad:.1e}')
    assert d_out < 5e-6 and d_grad < 1e-5, name


def test_softmax_as_gradient_and_bf16_probabilities():
  logits = 4.0 * jax.random.normal(jax.random.key(0), (2, 3, 5, 7))
  logits = jnp.where(jnp.arange(7) < 5, logits, jnp.finfo(jnp.float32).min)  # masked keys
  g = jax.random.normal(jax.random.key(1), logits.shape)
  ours = jax.grad(lambda x: jnp.sum(attn.softmax_as(x, np.dtype(jnp.float32)) * g))(logits)
  ref = jax.grad(lambda x: jnp.sum(jax.nn.softmax(x, axis=-1) * g))(logits)
  assert _max_diff(ours, ref) < 1e-6
  probs = attn.softmax_as(logits, np.dtype(jnp.bfloat16))
  assert probs.dtype == jnp.bfloat16 and float(jnp.abs(probs[..., 5:]).max()) == 0.0
  grad16 = jax.grad(lambda x: jnp.sum(attn.softmax_as(x, np.dtype(jnp.bfloat16)).astype(jnp.float32) * g))(logits)
  assert grad16.dtype == jnp.float32 and _max_diff(grad16, ref) < 0.02 * _scale(ref)


def test_cudnn_is_xla_off_a_gpu_and_rejects_unknown_names():
  q, k, v, bias, key_mask = _qkv()
  assert not attn.cudnn_supported(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), None)  # CPU
  run = lambda impl: attn.attention(q, k, v, bias=bias, key_mask=key_mask, scale=1.0, implementation=impl)
  np.testing.assert_array_equal(np.asarray(run('cudnn')), np.asarray(run('xla')))
  with pytest.raises(ValueError, match='flash'):
    run('flash')


# ----------------------------------------------------------------------- whole models
@pytest.fixture(scope='module')
def tiny(request):
  """Parametrized by kind (indirect): (kind, base model, params, adapters with nonzero B, padded batch dict)."""
  hf = _hf_config(request.param)
  if hf.model_type == 'llama':
    hf.attention_dropout = 0.1  # T5's attention dropout is its dropout_rate (0.1)
  model = lora.configure(model_from_hf_config(hf), r=4, alpha=8, dropout=0.1)
  params = init_params(model, jax.random.key(0))
  params = jax.tree.map(lambda x: 3.0 * x, params) if hf.model_type == 'llama' else params  # O(1) logits
  adapters = lora.init_adapters(params, jax.random.key(1), 4, lora.default_targets(model.family))
  leaves, treedef = jax.tree.flatten_with_path(adapters)
  adapters = jax.tree.unflatten(treedef, [0.3 * jax.random.normal(jax.random.key(i), x.shape) if p[-1].key == 'lora_b'
                                          else x for i, (p, x) in enumerate(leaves)])
  ids, mask = cfg.padded_batch(hf.vocab_size, length=16)
  batch = {'input_ids': ids, 'attention_mask': mask}
  if model.family == 't5':
    batch['decoder_input_ids'] = cfg.decoder_ids(hf.vocab_size, length=3)
    batch['answer_positions'] = np.tile(np.arange(3, dtype=np.int32), (3, 1))
  else:
    batch['answer_positions'] = np.minimum(mask.sum(1)[:, None] - 1 + np.arange(3)[None], 15).astype(np.int32)
  return request.param, model, params, adapters, batch


def _variant(model, **options):
  return model.clone(**options)


def _loss_and_grads(model, params, adapters, batch, rng):
  """(answer logits, (gradient w.r.t. the full params, gradient w.r.t. the adapters))."""
  def loss(p, a):
    logits = answer_logits(model, p, batch, adapters=a, dropout_rng=rng)  # [batch, answers, vocab]
    return jnp.sum(jax.nn.log_softmax(logits)[..., 5]) + 0.1 * jnp.sum(logits ** 2) / logits.size, logits
  (_, logits), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, adapters)
  return logits, grads


@pytest.mark.parametrize('tiny,padded,dropout',
                         _cases([(k, *p) for k in KINDS for p in [(True, 'off'), (False, 'off'), (True, 'attention_on'),
                                                                  (False, 'attention_on'), (True, 'attention_off')]],
                                fast={('t5:v1.1', True, 'off'), ('llama:llama3_gqa', True, 'attention_on')}),
                         indirect=['tiny'])
def test_model_logits_and_gradients_match_the_original_path(tiny, padded, dropout):
  """'xla' vs 'einsum': deterministic, training with attention dropout (the same masks: the
  dropout sites and their seeds do not depend on the path) and training with attention
  dropout 0 (the fused kernel; the other dropout stays on)."""
  kind, model, params, adapters, batch = tiny
  if not padded:
    batch = dict(batch, attention_mask=np.ones_like(batch['attention_mask']))
  rng = None if dropout == 'off' else jax.random.key(7)
  extra = {'attention_dropout': 0.0} if dropout == 'attention_off' else {}
  old = _loss_and_grads(_variant(model, **extra), params, adapters, batch, rng)
  new = _loss_and_grads(_variant(model, attention='xla', **extra), params, adapters, batch, rng)
  d_logits = _max_diff(new[0], old[0])
  print(f'{kind} padded={padded} dropout={dropout}: logits {d_logits:.1e} (max {_scale(old[0]):.1f})', end='')
  assert d_logits <= 1e-5 * max(1.0, _scale(old[0]))
  for name, got, want in zip(('params', 'adapters'), new[1], old[1]):
    d = _max_diff(got, want)
    print(f', {name} grads {d:.1e} (max {_scale(want):.1e})', end='')
    assert _scale(want) > 1e-3 and d <= 5e-6 * max(1.0, _scale(want))
  print()


@pytest.mark.parametrize('tiny', _cases([(k,) for k in KINDS], fast=set()), indirect=True)  # eager: ~4 s a kind
def test_attention_dropout_zero_keeps_the_other_dropout(tiny):
  _, model, params, adapters, batch = tiny
  run = lambda m, rng: np.asarray(answer_logits(m, params, batch, adapters=adapters, dropout_rng=rng))
  rng = jax.random.key(3)
  plain = run(model, None)
  for impl in ('einsum', 'xla'):
    no_attn = _variant(model, attention=impl, attention_dropout=0.0)
    assert np.abs(run(no_attn, rng) - plain).max() > 1e-3  # residual / feed-forward / adapter dropout still on
    assert np.abs(run(no_attn, rng) - run(_variant(model, attention=impl), rng)).max() > 1e-4  # attention dropout off
    np.testing.assert_array_equal(run(no_attn, None), plain)  # evaluation unchanged


@pytest.mark.parametrize('tiny,impl,policy',
                         _cases([(k, *p) for k in KINDS for p in [('einsum', 'nothing'), ('xla', 'nothing'),
                                                                  ('xla', 'dots'), ('xla', 'dots_all')]],
                                fast=set()),  # ~8 s a case with a cold compilation cache: the full suite only
                         indirect=['tiny'])
def test_remat_gives_the_same_gradients(tiny, impl, policy):
  """Full-parameter and adapter gradients with dropout on: remat recomputes the same dropout masks."""
  kind, model, params, adapters, batch = tiny
  rng = jax.random.key(5)
  plain = _loss_and_grads(_variant(model, attention=impl), params, adapters, batch, rng)
  remat = _loss_and_grads(_variant(model, attention=impl, remat=True, remat_policy=policy), params, adapters,
                          batch, rng)
  print(f'{kind} remat {policy} {impl}: logits {_max_diff(remat[0], plain[0]):.1e}, '
        f'grads {_max_diff(remat[1], plain[1]):.1e} (max {_scale(plain[1]):.1e})')
  # fp32 rounding only (XLA fuses a recomputed layer differently): measured <= 7e-7 of the logits'
  # scale and <= 5e-6 of the gradients' (Llama, policy 'nothing'; 'dots' is bit-exact there)
  assert _max_diff(remat[0], plain[0]) <= 5e-6 * max(1.0, _scale(plain[0]))
  assert _max_diff(remat[1], plain[1]) <= 2e-5 * max(1.0, _scale(plain[1]))


@pytest.mark.parametrize('tiny', _cases([(k,) for k in KINDS], fast=set()), indirect=True)  # ~9 s cold: full suite
def test_rolled_scan_equals_unrolled(tiny):
  _, model, params, adapters, batch = tiny
  rng = jax.random.key(2)
  unrolled = _loss_and_grads(model, params, adapters, batch, rng)
  rolled = _loss_and_grads(_variant(model, scan_unroll=1), params, adapters, batch, rng)
  assert _max_diff(rolled, unrolled) <= 1e-5 * max(1.0, _scale(unrolled))


@pytest.mark.parametrize('tiny', _cases([(k,) for k in KINDS], fast=set()), indirect=True)
def test_bf16_compute_stays_close_on_the_new_path(tiny):
  _, model, params, adapters, batch = tiny
  ref = np.asarray(answer_logits(model, params, batch, adapters=adapters))
  rng = jax.random.key(4)
  for impl in ('xla', 'cudnn'):
    m = _variant(model, attention=impl, dtype='bfloat16')
    out = np.asarray(answer_logits(m, params, batch, adapters=adapters))
    assert out.dtype == np.float32 and np.abs(out - ref).max() <= 0.05 * np.abs(ref).max()
    logits, grads = _loss_and_grads(m, params, adapters, batch, rng)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# -------------------------------------------------------------------- dropout seeds
def test_key_seeded_dropout_keeps_the_statistics():
  """dropout_seeds='key': the keep rate, fresh uncorrelated masks per rng, the same mask for the same rng."""
  apply = lambda rate, x, seed: np.asarray(Dropout(rate, 'key').apply({}, x, False,
                                                                      rngs={'dropout': jax.random.key(seed)}))
  y = apply(0.1, jnp.ones((1 << 22,)), 0)
  assert abs((y != 0).mean() - 0.9) < 1e-3 and abs(y.mean() - 1.0) < 2e-3
  a, b = (apply(0.5, jnp.ones((1 << 20,)), s) != 0 for s in (0, 1))
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.01 and abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01
  np.testing.assert_array_equal(a, apply(0.5, jnp.ones((1 << 20,)), 0) != 0)
  bits = np.asarray(Dropout(0.5).apply({}, jnp.ones((1 << 20,)), False, rngs={'dropout': jax.random.key(0)})) != 0
  assert abs(np.corrcoef(a, bits)[0, 1]) < 0.01  # another stream than 'bits'


@pytest.mark.parametrize('tiny', _cases([(k,) for k in KINDS], fast=set()), indirect=True)  # ~10 s a kind
def test_key_seeded_dropout_in_a_model(tiny):
  """Evaluation is unchanged; training draws other masks than 'bits'; remat recomputes the same ones."""
  _, model, params, adapters, batch = tiny
  keyed = _variant(model, dropout_seeds='key', attention='xla')
  np.testing.assert_array_equal(np.asarray(answer_logits(keyed, params, batch, adapters=adapters)),
                                np.asarray(answer_logits(model, params, batch, adapters=adapters)))
  rng = jax.random.key(6)
  plain = _loss_and_grads(keyed, params, adapters, batch, rng)
  bits = _loss_and_grads(_variant(model, attention='xla'), params, adapters, batch, rng)
  assert _max_diff(plain[0], bits[0]) > 1e-3
  remat = _loss_and_grads(_variant(keyed, remat=True, remat_policy='dots'), params, adapters, batch, rng)
  assert _max_diff(remat[1], plain[1]) <= 2e-5 * max(1.0, _scale(plain[1]))


# ------------------------------------------------------------- against transformers
@pytest.mark.slow  # compares with PyTorch
@pytest.mark.parametrize('kind', ['t5:v1.0', 't5:v1.1', 'llama:llama3_gqa', 'llama:qwen2', 'llama:tied'])
def test_new_path_matches_transformers(kind, tmp_path):
  import models_testlib as lib
  hf = _hf_config(kind)
  torch_model = lib.torch_model(hf)
  path = lib.save_torch(torch_model, tmp_path)
  model, params, _ = load_pretrained(path, attention='xla')
  assert model.attention == 'xla'
  ids, mask = lib.padded_batch(hf.vocab_size)
  dec = lib.decoder_ids(hf.vocab_size) if model.family == 't5' else None
  ref = lib.torch_logits(torch_model, ids, mask, dec)
  diff = np.abs(np.asarray(forward(model, params, ids, mask, dec)) - ref)
  diff = diff[mask == 1] if model.family == 'llama' else diff  # padded positions are not compared
  print(f'{kind} xla vs transformers: {diff.max():.1e}')
  assert diff.max() <= 1e-4


# ------------------------------------------------------------------------------ options
def test_options_reach_the_model_and_bad_values_fail():
  from e2urec_jax.config import default_config
  from e2urec_jax.models import model_options
  c = default_config()
  assert model_options(c.model) == {'remat': False, 'attention': 'einsum', 'attention_dropout': -1.0,
                                    'remat_policy': 'nothing', 'scan_unroll': 0, 'dropout_seeds': 'bits'}
  c.model.attention, c.model.attention_dropout, c.model.remat_policy = 'cudnn', 0.0, 'dots'
  model = model_from_hf_config(_hf_config('t5:v1.0'), **model_options(c.model))
  assert (model.attention, model.attention_dropout, model.remat_policy) == ('cudnn', 0.0, 'dots')
  for bad in ({'attention': 'flash'}, {'remat_policy': 'some'}, {'attention_dropout': 1.0}, {'dropout_seeds': 'x'}):
    with pytest.raises(UserError):
      model_from_hf_config(_hf_config('t5:v1.0'), **bad)
  with pytest.raises(TypeError):
    model_from_hf_config(_hf_config('t5:v1.0'), attention_kernel='xla')

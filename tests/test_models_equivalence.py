"""Our Flax models against transformers (PyTorch) on tiny random checkpoints, padded batches.

PyTorch (models_testlib) is imported inside the tests, so collecting this file for the fast tier
does not load it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

import model_configs as cfg
from e2urec_jax.models import answer_logits, forward, load_pretrained, save_pretrained

pytestmark = pytest.mark.slow  # compares with PyTorch

TOL = 1e-4
KINDS = ['t5:v1.0', 't5:v1.1', 'llama:llama3_gqa', 'llama:qwen2', 'llama:tied']


def _config(kind):
  family, name = kind.split(':')
  return cfg.t5_config(name) if family == 't5' else cfg.llama_config(name)


@pytest.fixture(scope='module', params=KINDS)
def case(request, tmp_path_factory):
  """(kind, torch model, our model, our params, batch) for one checkpoint kind."""
  import models_testlib as lib
  hf_config = _config(request.param)
  torch_model = lib.torch_model(hf_config)
  path = lib.save_torch(torch_model, tmp_path_factory.mktemp(request.param.replace(':', '_')))
  model, params, tokenizer = load_pretrained(path)
  assert tokenizer is None
  ids, mask = lib.padded_batch(hf_config.vocab_size)
  dec = lib.decoder_ids(hf_config.vocab_size) if model.family == 't5' else None
  return request.param, torch_model, model, params, (ids, mask, dec)


def _max_diff(model, ours, ref, mask):
  diff = np.abs(np.asarray(ours) - ref)
  if model.family == 'llama':  # right padding: padded positions are not compared
    diff = diff[mask == 1]
  return float(diff.max())


def test_logits_match_transformers(case):
  import models_testlib as lib
  kind, torch_model, model, params, (ids, mask, dec) = case
  ref = lib.torch_logits(torch_model, ids, mask, dec)
  ours = forward(model, params, ids, mask, dec)
  assert ours.shape == ref.shape and ours.dtype == jnp.float32
  assert np.abs(ref).max() > 1.0  # the check is not vacuous
  diff = _max_diff(model, ours, ref, mask)
  print(f'{kind}: max |diff| = {diff:.2e} (max |logit| {np.abs(ref).max():.1f})')
  assert diff <= TOL


def test_padding_does_not_change_valid_rows(case):
  kind, _, model, params, (ids, mask, dec) = case
  full = forward(model, params, ids, mask, dec)
  short = ids[2:3, :5], mask[2:3, :5]
  alone = forward(model, params, *short, None if dec is None else dec[2:3])
  got = full[2:3] if model.family == 't5' else full[2:3, :5]
  np.testing.assert_allclose(np.asarray(got), np.asarray(alone), atol=TOL)


def test_answer_logits_equal_gathered_forward(case):
  _, _, model, params, (ids, mask, dec) = case
  if model.family == 't5':
    positions = np.tile(np.arange(dec.shape[1]), (ids.shape[0], 1))
  else:  # the answer follows each prompt: positions len-1 .. len+1
    lengths = mask.sum(1)
    positions = np.minimum(lengths[:, None] - 1 + np.arange(3)[None], ids.shape[1] - 1)
  batch = {'input_ids': ids, 'attention_mask': mask, 'answer_positions': positions.astype(np.int32)}
  if dec is not None:
    batch['decoder_input_ids'] = dec
  got = answer_logits(model, params, batch)
  full = forward(model, params, ids, mask, dec)
  want = np.take_along_axis(np.asarray(full), positions[..., None], axis=1)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_saved_by_us_loads_in_transformers_and_back(case, tmp_path):
  import models_testlib as lib
  kind, torch_model, model, params, (ids, mask, dec) = case
  save_pretrained(model, params, tmp_path)
  family = kind.split(':')[0]
  auto = transformers.T5ForConditionalGeneration if family == 't5' else transformers.AutoModelForCausalLM
  reloaded = auto.from_pretrained(tmp_path).eval()
  ref = lib.torch_logits(torch_model, ids, mask, dec)
  again = lib.torch_logits(reloaded, ids, mask, dec)
  np.testing.assert_array_equal(again, ref)
  model2, params2, _ = load_pretrained(tmp_path)
  assert model2.arch == model.arch
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_remat_and_jit_give_the_same_logits(case):
  _, _, model, params, (ids, mask, dec) = case
  plain = forward(model, params, ids, mask, dec)
  remat = model.clone(remat=True)
  jitted = jax.jit(forward, static_argnums=0)(remat, params, ids, mask, dec)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(plain), atol=1e-5)


def test_bf16_storage_and_compute_stays_close(case):
  _, _, model, params, (ids, mask, dec) = case
  ref = np.asarray(forward(model, params, ids, mask, dec))
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  for m in (model, model.clone(dtype='bfloat16')):
    out = np.asarray(forward(m, bf16, ids, mask, dec))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    rows = mask == 1 if model.family == 'llama' else slice(None)
    assert np.abs(out - ref)[rows].max() <= 0.1 * np.abs(ref).max()


def test_all_padding_rows_stay_finite(case):
  """Batches are padded to a multiple of the device count with rows of pure padding."""
  _, _, model, params, (ids, mask, dec) = case
  ids, mask = ids.copy(), mask.copy()
  ids[1], mask[1] = 0, 0
  out = np.asarray(forward(model, params, ids, mask, dec))
  assert np.isfinite(out).all()
  grads = jax.jit(jax.grad(lambda p: jnp.sum(forward(model, p, ids, mask, dec)[1])))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))

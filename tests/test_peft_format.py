"""PEFT adapter folders both ways: ours -> peft.PeftModel (PyTorch) and peft's -> ours, same logits;
and the one-line refusals of folders that are not plain LoRA for this model.

The comparisons with peft (PyTorch) are slow-tier tests that import it themselves; the refusals
and the round trip run in the fast tier without it.
"""
import json
import os
import shutil

import jax
import numpy as np
import optax
import pytest
import transformers
from flax import traverse_util
from safetensors.numpy import load_file, save_file

import model_configs as cfg
from e2urec_jax import losses
from e2urec_jax.errors import UserError
from e2urec_jax.models import answer_logits, init_params, load_pretrained, lora, model_from_hf_config, save_pretrained
from e2urec_jax.models.peft_format import CONFIG_FILE, WEIGHTS_FILE, export_peft, load_peft_adapters

TOL = 1e-4
T5_ALL = ('q', 'k', 'v', 'o', 'wi_0', 'wi_1', 'wo')
LLAMA_ALL = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')


def _hf_config(kind):
  family, name = kind.split(':')
  return cfg.t5_config(name) if family == 't5' else cfg.llama_config(name)


def _batch(hf_config, family):
  """Right-padded prompts; answer positions: 3 decoder steps (T5) or the last 3 prompt tokens."""
  ids, mask = cfg.padded_batch(hf_config.vocab_size, length=16)
  if family == 't5':
    dec = cfg.decoder_ids(hf_config.vocab_size, length=3)
    return {'input_ids': ids, 'attention_mask': mask, 'decoder_input_ids': dec,
            'answer_positions': np.tile(np.arange(3, dtype=np.int32), (ids.shape[0], 1))}
  positions = mask.sum(1)[:, None] - 3 + np.arange(3)[None]  # [batch, 3]
  return {'input_ids': ids, 'attention_mask': mask, 'answer_positions': positions.astype(np.int32)}


def _torch_answer_logits(torch_model, batch):
  import torch
  kwargs = {k: torch.tensor(np.asarray(batch[k]), dtype=torch.long)
            for k in ('input_ids', 'attention_mask', 'decoder_input_ids') if k in batch}
  with torch.no_grad():
    logits = torch_model(**kwargs).logits.float().numpy()  # [batch, length, vocab]
  return np.take_along_axis(logits, batch['answer_positions'][..., None], axis=1)  # [batch, answers, vocab]


def _train_a_few_steps(model, params, adapters, batch, steps=3):
  """Adam on the answer cross entropy with adapter and model dropout on: A and B both move."""
  labels = np.random.RandomState(0).randint(2, 100, batch['answer_positions'].shape).astype(np.int32)
  mask = np.ones_like(labels)
  optimizer = optax.adam(0.05)

  @jax.jit
  def step(adapters, opt_state, rng):
    loss = lambda a: losses.answer_cross_entropy(answer_logits(model, params, batch, a, rng), labels, mask)
    grads = jax.grad(loss)(adapters)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(adapters, updates), opt_state

  opt_state = optimizer.init(adapters)
  for rng in jax.random.split(jax.random.key(3), steps):
    adapters, opt_state = step(adapters, opt_state, rng)
  return adapters


EXPORT_CASES = [
    ('t5:v1.0', None),  # peft's default q, v (self- and cross-attention)
    ('t5:v1.1', T5_ALL + ('lm_head',)),  # gated MLP and the untied head
    ('t5:v1.0', ('cross_attn.q', 'encoder.layers.self_attn.v')),  # needs a regex in target_modules
    ('llama:llama3_gqa', None),
    ('llama:qwen2', LLAMA_ALL),  # biased q/k/v
]


@pytest.mark.slow
@pytest.mark.parametrize('kind,targets', EXPORT_CASES, ids=lambda x: x if isinstance(x, str) else ','.join(x or ()))
def test_exported_adapters_load_in_peft_with_our_logits(kind, targets, tmp_path):
  import models_testlib as lib
  import peft
  hf_config = _hf_config(kind)
  model, params, _ = load_pretrained(lib.save_torch(lib.torch_model(hf_config), tmp_path / 'hf'))
  targets = targets or lora.default_targets(model.family)
  model = lora.configure(model, r=4, alpha=12, dropout=0.1)
  batch = _batch(hf_config, model.family)
  adapters = _train_a_few_steps(model, params, lora.init_adapters(params, jax.random.key(1), 4, targets), batch)
  ours = np.asarray(answer_logits(model, params, batch, adapters))
  assert np.abs(ours - np.asarray(answer_logits(model, params, batch))).max() > 0.05  # the adapters matter

  save_pretrained(model, params, tmp_path / 'base')  # the base PEFT sits on: as we export it
  export_peft(model, adapters, str(tmp_path / 'peft'), alpha=12, dropout=0.1,
              base_model_name_or_path=str(tmp_path / 'base'))
  auto = transformers.T5ForConditionalGeneration if model.family == 't5' else transformers.AutoModelForCausalLM
  peft_model = peft.PeftModel.from_pretrained(auto.from_pretrained(tmp_path / 'base'), tmp_path / 'peft').eval()
  theirs = _torch_answer_logits(peft_model, batch)
  diff = float(np.abs(ours - theirs).max())
  print(f'{kind} {",".join(targets)}: ours -> peft max |diff| = {diff:.2e} (max |logit| {np.abs(theirs).max():.1f})')
  assert diff <= TOL

  # peft re-saving what it loaded writes our tensors and (on every field we write) our config;
  # with lm_head targeted it also saves the head's base weight, which is not an adapter
  peft_model.save_pretrained(tmp_path / 'resaved')
  resaved = {k: v for k, v in load_file(tmp_path / 'resaved' / WEIGHTS_FILE).items() if '.lora_' in k}
  written = load_file(tmp_path / 'peft' / WEIGHTS_FILE)
  assert resaved.keys() == written.keys()
  for key in written:
    np.testing.assert_array_equal(resaved[key], written[key])
  ours_cfg, theirs_cfg = (json.load(open(tmp_path / d / CONFIG_FILE)) for d in ('peft', 'resaved'))
  for key, value in ours_cfg.items():
    got = theirs_cfg[key]
    assert (sorted(got) == sorted(value)) if isinstance(value, list) else got == value, key


REVERSE_CASES = [  # (kind, LoraConfig arguments, our run's targets, our run's alpha)
    ('t5:v1.0', dict(target_modules=['q', 'v'], lora_alpha=8), None, 8.0),
    ('t5:v1.1', dict(target_modules=list(T5_ALL), lora_alpha=16, use_rslora=True), T5_ALL, 8.0),
    ('llama:llama3_gqa', dict(target_modules='all-linear', lora_alpha=8), LLAMA_ALL, 32.0),
    ('llama:qwen2', dict(target_modules=['q_proj', 'v_proj'], lora_alpha=8, lora_dropout=0.1), None, 8.0),
]


@pytest.mark.slow
@pytest.mark.parametrize('kind,peft_args,targets,alpha', REVERSE_CASES, ids=[c[0] for c in REVERSE_CASES])
def test_peft_adapters_load_here_with_peft_logits(kind, peft_args, targets, alpha, tmp_path):
  import models_testlib as lib
  import peft
  import torch
  hf_config = _hf_config(kind)
  torch_base = lib.torch_model(hf_config)
  model, params, _ = load_pretrained(lib.save_torch(torch_base, tmp_path / 'hf'))
  task = 'SEQ_2_SEQ_LM' if model.family == 't5' else 'CAUSAL_LM'
  peft_model = peft.get_peft_model(torch_base, peft.LoraConfig(r=4, task_type=task, **peft_args))
  torch.manual_seed(5)
  with torch.no_grad():  # trained adapters: B away from its zero init (A keeps peft's kaiming draw)
    for name, p in peft_model.named_parameters():
      if 'lora_B' in name:
        p.normal_(0, 0.1)
  peft_model.save_pretrained(tmp_path / 'peft')
  batch = _batch(hf_config, model.family)
  theirs = _torch_answer_logits(peft_model.eval(), batch)

  targets = targets or lora.default_targets(model.family)
  adapters = load_peft_adapters(str(tmp_path / 'peft'), model, params, r=4, alpha=alpha, targets=targets)
  expected = lora.init_adapters(params, jax.random.key(0), 4, targets)
  assert jax.tree.structure(adapters) == jax.tree.structure(expected)
  assert jax.tree.map(np.shape, adapters) == jax.tree.map(np.shape, expected)
  student = lora.configure(model, r=4, alpha=alpha)
  ours = np.asarray(answer_logits(student, params, batch, adapters))
  base = np.asarray(answer_logits(student, params, batch))
  assert np.abs(theirs - base).max() > 0.05  # the adapters matter
  diff = float(np.abs(ours - theirs).max())
  print(f'{kind} {peft_args}: peft -> ours max |diff| = {diff:.2e} (max |logit| {np.abs(theirs).max():.1f})')
  assert diff <= TOL


# ------------------------------------------------------------------ refusals

@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """(model, params, adapters, folder): q,v adapters (r=4, alpha=8, B non-zero) of a tiny T5, exported."""
  model = lora.configure(model_from_hf_config(cfg.t5_config('v1.0')), r=4, alpha=8)
  params = init_params(model, jax.random.key(0))
  adapters = lora.init_adapters(params, jax.random.key(1), 4, ('q', 'v'))
  adapters = jax.tree.map(lambda x: x + 0.1, adapters)
  folder = str(tmp_path_factory.mktemp('exported') / 'peft')
  export_peft(model, adapters, folder, alpha=8, base_model_name_or_path='t5-tiny')
  return model, params, adapters, folder


def test_round_trip_is_exact(exported):
  model, params, adapters, folder = exported
  again = load_peft_adapters(folder, model, params, r=4, alpha=8, targets=('q', 'v'))
  jax.tree.map(np.testing.assert_array_equal, again, jax.tree.map(np.asarray, adapters))
  doubled = load_peft_adapters(folder, model, params, r=4, alpha=16, targets='')  # run scale twice PEFT's
  np.testing.assert_allclose(doubled['encoder']['layers']['self_attn']['q']['lora_b'],
                             np.asarray(adapters['encoder']['layers']['self_attn']['q']['lora_b']) / 2, rtol=1e-6)


def _edit_config(**changes):
  def edit(folder):
    path = os.path.join(folder, CONFIG_FILE)
    config = json.load(open(path))
    config.update(changes)
    json.dump(config, open(path, 'w'))
  return edit


def _edit_tensors(edit_dict):
  def edit(folder):
    path = os.path.join(folder, WEIGHTS_FILE)
    tensors = dict(load_file(path))
    edit_dict(tensors)
    save_file(tensors, path)
  return edit


_Q = 'base_model.model.encoder.block.0.layer.0.SelfAttention.q'


def _rename(tensors):
  tensors[_Q.replace('.q', '.qq') + '.lora_A.weight'] = tensors.pop(_Q + '.lora_A.weight')


def _reshape(tensors):
  tensors[_Q + '.lora_A.weight'] = np.zeros((4, 31), np.float32)


def _drop_layer(tensors):
  del tensors[_Q.replace('block.0', 'block.1') + '.lora_B.weight']


def _only_bin(folder):
  os.remove(os.path.join(folder, WEIGHTS_FILE))
  open(os.path.join(folder, 'adapter_model.bin'), 'wb').close()


def _truncate(folder):
  path = os.path.join(folder, WEIGHTS_FILE)
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 2])


def _random_bytes(folder):
  """Random bytes whose first 8 read as a header length over 2**63: int too large for a read."""
  open(os.path.join(folder, WEIGHTS_FILE), 'wb').write(np.random.RandomState(0).bytes(4096))


def _nan(tensors):
  for key in tensors:
    tensors[key] = np.full_like(tensors[key], np.nan)


REFUSALS = {  # name: (edit of the folder, run settings, words the message must hold)
    'no config': (lambda f: os.remove(os.path.join(f, CONFIG_FILE)), {}, ['no adapter_config.json']),
    'not lora': (_edit_config(peft_type='IA3'), {}, ["peft_type is 'IA3'", 'only LORA']),
    'dora': (_edit_config(use_dora=True), {}, ['use_dora=True', 'DoRA']),
    'rank pattern': (_edit_config(rank_pattern={'q': 8}), {}, ['rank_pattern', 'per-module ranks']),
    'bias': (_edit_config(bias='all'), {}, ["bias='all'"]),
    'only .bin': (_only_bin, {}, ['no adapter_model.safetensors', 'safe_serialization=True']),
    'truncated': (_truncate, {}, ['not a readable safetensors file']),
    'random bytes': (_random_bytes, {}, [WEIGHTS_FILE + ' is not a readable safetensors file', 'header length']),
    'non-finite': (_edit_tensors(_nan), {}, [WEIGHTS_FILE + ": 'base_model.model.", 'non-finite weight(s) (NaN or inf)',
                                              'diverged']),
    'rank': (lambda f: None, {'r': 8}, ['rank r=4', 'configured with r=8', '--config.lora.r=4']),
    'targets': (lambda f: None, {'targets': ('q', 'k', 'v', 'o')},
                ['adapters target q,v', 'targets=q,k,v,o', '--config.lora.targets=q,v']),
    'unknown module': (_edit_tensors(_rename), {}, [_Q.replace('.q', '.qq') + '.lora_A.weight', 'names no LoRA pair']),
    'shape': (_edit_tensors(_reshape), {}, [_Q + '.lora_A.weight', 'shape (4, 31)', 'needs (4, 32)']),
    'missing layer': (_edit_tensors(_drop_layer), {},
                      ['missing ' + _Q.replace('block.0', 'block.1') + '.lora_B.weight', 'every layer']),
}


@pytest.mark.parametrize('name', list(REFUSALS))
def test_refusals_are_one_line(name, exported, tmp_path):
  model, params, _, folder = exported
  edit, run, words = REFUSALS[name]
  copy = str(tmp_path / 'peft')
  shutil.copytree(folder, copy)
  edit(copy)
  settings = {'r': 4, 'alpha': 8.0, 'targets': ('q', 'v'), **run}
  with pytest.raises(UserError) as e:
    load_peft_adapters(copy, model, params, **settings)
  message = str(e.value)
  assert '\n' not in message
  for word in words:
    assert word in message, (word, message)


def test_mixed_ranks_are_refused_on_export(exported, tmp_path):
  model, params, adapters, _ = exported
  flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, adapters))
  key = ('encoder', 'layers', 'self_attn', 'q')
  flat[key + ('lora_a',)] = np.zeros(flat[key + ('lora_a',)].shape[:-1] + (2,), np.float32)
  flat[key + ('lora_b',)] = np.zeros((flat[key + ('lora_b',)].shape[0], 2, flat[key + ('lora_b',)].shape[-1]),
                                     np.float32)
  with pytest.raises(UserError, match='mixed ranks'):
    export_peft(model, traverse_util.unflatten_dict(flat), str(tmp_path / 'x'), alpha=8)

"""PEFT both ways through the real commands, on a tiny random T5 and a tiny random Llama.

Out: prepare -> train -> augment -> unlearn (a few E2URec steps) -> `export --format=peft`; the
folder loads with `peft.PeftModel.from_pretrained` on the transformers model built from the
exported base, and its answer logits are ours. In: adapters made and perturbed with peft in
PyTorch start our E2URec student (`lora.init_from`): before any step (a first step at learning
rate 0 leaves them as they were) its logits are peft's. torch and peft are imported inside the
tests (slow tier).
"""
import os
import shutil

import numpy as np
import pytest

from conftest import CACHE, load_config
from e2urec_jax import commands
from e2urec_jax.errors import UserError
from e2urec_jax.train.callbacks import Callback

TOL = 1e-4
FAMILIES = {
    't5': {},  # peft's default targets: q, v
    'llama': {'lora.targets': 'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj'},
}


def _config(family: str, **overrides):
  c = load_config('configs/demo.py:test')
  c.jax_cache_dir, c.progress = CACHE, False
  c.data.num_samples = 600
  c.model.scratch.family = family
  c.model.dropout = 0.1  # dropout on while training; evaluation and peft's eval mode run without
  c.train.epochs, c.train.max_steps, c.train.eval_every = 1, 4, 4
  c.augment.mode, c.augment.steps, c.augment.batch_size = 'lora', 2, 8
  c.unlearn.e2urec.steps, c.unlearn.e2urec.batch_size = 3, 8
  c.unlearn.e2urec.learning_rate = 0.05  # a few steps that move the adapters well away from the base
  c.eval.noise_floor = False
  for key, value in {**FAMILIES[family], **overrides}.items():
    section, field = key.rsplit('.', 1)
    node = c
    for part in section.split('.'):
      node = node[part]
    node[field] = value
  from e2urec_jax import config as config_lib
  config_lib.validate(c)
  return c


@pytest.fixture(scope='module', params=list(FAMILIES))
def trained(request, tmp_path_factory):
  """(family, workdir) with the original trained; tests work on copies."""
  family = request.param
  workdir = str(tmp_path_factory.mktemp(f'peft_{family}') / 'run')
  config = _config(family)
  commands.prepare(config, workdir)
  commands.train(config, workdir)
  return family, workdir


def _copy(workdir, tmp_path) -> str:
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy


def _valid_batch(ctx, n=16):
  from e2urec_jax.data import make_batch
  return make_batch(ctx.data, 'valid', np.arange(n))


def _torch_answer_logits(torch_model, batch):
  import torch
  kwargs = {k: torch.tensor(np.asarray(batch[k]), dtype=torch.long)
            for k in ('input_ids', 'attention_mask', 'decoder_input_ids') if k in batch}
  with torch.no_grad():
    logits = torch_model(**kwargs).logits.float().numpy()  # [batch, length, vocab]
  return np.take_along_axis(logits, batch['answer_positions'][..., None], axis=1)  # [batch, answer, vocab]


def _torch_model(folder):
  import json

  import transformers
  model_type = json.load(open(os.path.join(folder, 'config.json')))['model_type']
  auto = transformers.AutoModelForSeq2SeqLM if model_type == 't5' else transformers.AutoModelForCausalLM
  return auto.from_pretrained(folder, dtype='float32').eval()


def _context(config, workdir):
  from e2urec_jax.train import context, paths
  return context.open_run(config, paths.run_paths(workdir))


@pytest.mark.slow
def test_export_peft_loads_in_peft_with_our_logits(trained, tmp_path):
  import peft
  from e2urec_jax.models import answer_logits
  from e2urec_jax.train import artifacts
  family, workdir = trained
  workdir = _copy(workdir, tmp_path)
  config = _config(family)
  commands.unlearn(config, workdir)  # the augmented model, then 3 E2URec steps
  out = str(tmp_path / 'exported')
  commands.export(config, workdir, output=out, model='e2urec', fmt='peft')
  assert sorted(os.listdir(out)) == ['.e2urec_export.json', 'adapter_config.json', 'adapter_model.safetensors', 'base']  # + our export marker

  ctx = _context(config, workdir)
  adapters, meta = artifacts.load_adapters(ctx.model_dir('e2urec'))
  _, base = artifacts.load_full(meta['base_dir'])
  batch = _valid_batch(ctx)
  ours = np.asarray(answer_logits(ctx.model, base, batch, adapters))
  before = np.asarray(answer_logits(ctx.model, base, batch))
  assert np.abs(ours - before).max() > 1e-2  # the trained adapters matter

  peft_model = peft.PeftModel.from_pretrained(_torch_model(os.path.join(out, 'base')), out).eval()
  assert peft_model.peft_config['default'].base_model_name_or_path == os.path.join(out, 'base')
  theirs = _torch_answer_logits(peft_model, batch)
  diff = float(np.abs(ours - theirs).max())
  print(f'{family}: e2urec (3 steps) exported as PEFT: max |ours - peft| = {diff:.2e} '
        f'(max |logit| {np.abs(theirs).max():.1f}; the adapters move the logits by {np.abs(ours - before).max():.2f})')
  assert diff <= TOL
  auto = peft.AutoPeftModelForSeq2SeqLM if family == 't5' else peft.AutoPeftModelForCausalLM
  again = _torch_answer_logits(auto.from_pretrained(out).eval(), batch)  # the base found by its recorded path
  assert float(np.abs(again - theirs).max()) == 0.0


class _FirstStepAtRateZero(Callback):
  """E2URec's first step at learning rate 0 (AdamW then changes nothing); keeps the student's logits on `batch`."""

  def __init__(self, batch):
    self.batch, self.logits = batch, None

  def hparams(self, phase, step, hp):
    return dict(hp, lr=0.0) if phase == 'e2urec' and step == 1 else hp

  def after_step(self, event):
    if event.phase == 'e2urec' and event.step == 1:
      from e2urec_jax.models import answer_logits
      params, adapters = event.model()
      self.logits = np.asarray(answer_logits(event.ctx.model, params, self.batch, adapters))


@pytest.mark.slow
def test_peft_adapters_start_our_student(trained, tmp_path):
  import peft
  import torch
  family, workdir = trained
  workdir = _copy(workdir, tmp_path)
  config = _config(family)
  original = os.path.join(workdir, 'models', 'original')
  torch_original = _torch_model(original)
  targets = config.lora.targets.split(',') if config.lora.targets else None
  task = 'SEQ_2_SEQ_LM' if family == 't5' else 'CAUSAL_LM'
  lora_config = peft.LoraConfig(r=config.lora.r, lora_alpha=8, target_modules=targets, task_type=task)
  peft_model = peft.get_peft_model(torch_original, lora_config)
  generator = torch.Generator().manual_seed(7)
  with torch.no_grad():  # adapters "trained elsewhere": both matrices away from peft's init
    for name, p in peft_model.named_parameters():
      if 'lora_' in name:
        p.add_(torch.randn(p.shape, generator=generator) * 0.1)
  folder = str(tmp_path / 'peft_adapters')
  peft_model.save_pretrained(folder)

  config = _config(family, **{'lora.init_from': folder})  # our alpha (32) is not theirs (8): B is rescaled
  ctx = _context(config, workdir)
  batch = _valid_batch(ctx)
  theirs = _torch_answer_logits(peft_model.eval(), batch)
  capture = _FirstStepAtRateZero(batch)
  commands.unlearn(config, workdir, callbacks=(capture,))
  diff = float(np.abs(capture.logits - theirs).max())
  from e2urec_jax.models import answer_logits
  original_logits = np.asarray(answer_logits(ctx.model, ctx.load_params('original'), batch))
  print(f'{family}: peft adapters -> our E2URec student before any step: max |ours - peft| = {diff:.2e} '
        f'(they move the original by {np.abs(theirs - original_logits).max():.2f})')
  assert np.abs(theirs - original_logits).max() > 1e-2
  assert diff <= TOL
  from e2urec_jax.train import artifacts
  assert artifacts.read_done(ctx.phase_dir('e2urec'))['init_from'] == folder
  assert 'init_from' not in artifacts.read_done(ctx.phase_dir('augmented'))  # not in lora.init_phases


@pytest.mark.slow
def test_init_from_mismatch_is_refused_before_any_phase(trained, tmp_path):
  import jax

  from e2urec_jax.models import lora
  from e2urec_jax.models.peft_format import export_peft
  family, workdir = trained
  workdir = _copy(workdir, tmp_path)
  ctx = _context(_config(family), workdir)
  params = ctx.load_params('original')
  other = ('q', 'k') if family == 't5' else ('q_proj',)
  folder = str(tmp_path / 'other_targets')
  export_peft(ctx.model, lora.init_adapters(params, jax.random.key(0), ctx.bundle.lora_r, other), folder, alpha=8)
  with pytest.raises(UserError) as e:
    commands.unlearn(_config(family, **{'lora.init_from': folder}), workdir)
  message = str(e.value)
  assert '\n' not in message and 'adapters target' in message and '--config.lora.targets=' in message, message
  assert not os.path.exists(os.path.join(workdir, 'phases', 'augmented'))  # refused before any phase ran


# ------------------------------------------------------------------ config checks (fast)
@pytest.mark.parametrize('overrides,words', [
    ({'lora.init_phases': 'e2urec,bogus'}, ["config.lora.init_phases='e2urec,bogus'", "'augmented'", "'e2urec'"]),
    ({'lora.init_phases': 'neggrad'}, ["config.lora.init_phases='neggrad'"]),  # a full-weights method
    ({'lora.init_from': '/no/such/folder'}, ['no adapter_config.json', 'PeftModel.save_pretrained']),
    ({'lora.init_from': 'EXPORTED', 'lora.init_phases': 'e2urec,original'},
     ['original trains full weights', "config.train.mode='full'", '--config.train.mode=lora']),
])
def test_init_from_settings_are_checked_before_any_work(overrides, words, tmp_path):
  from e2urec_jax import config as config_lib
  c = load_config('configs/demo.py:test')
  folder = tmp_path / 'peft'
  folder.mkdir()
  (folder / 'adapter_config.json').write_text('{"peft_type": "LORA", "r": 16}')
  for key, value in overrides.items():
    section, field = key.split('.')
    c[section][field] = str(folder) if value == 'EXPORTED' else value
  with pytest.raises(UserError) as e:
    config_lib.validate(c)
  message = str(e.value)
  assert '\n' not in message
  for word in words:
    assert word in message, (word, message)


def test_export_format_is_checked(tmp_path):
  import subprocess
  import sys
  from conftest import REPO
  out = subprocess.run([sys.executable, '-m', 'e2urec_jax', 'export', '--format=onnx', f'--output={tmp_path}/x',
                        f'--workdir={tmp_path}'], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert out.returncode == 1 and out.stderr.strip() == "error: --format='onnx': must be one of merged, peft"
  out = subprocess.run([sys.executable, '-m', 'e2urec_jax', 'train', '--format=peft', f'--workdir={tmp_path}'],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert out.returncode == 2 and out.stderr.strip() == 'error: --format is not an option of train'


def test_export_refuses_outputs_it_would_destroy(tmp_path):
  """export replaces its whole output folder: never the workdir, a folder in or above it, or a folder
  that is neither empty nor an earlier export of the same format (its marker file), whatever its
  files are named (config.json, api_tokens.txt, tokenized_corpus/, base/ look like export files)."""
  from e2urec_jax.eval.export import MARKER, check_output
  work = tmp_path / 'run'
  (work / 'models' / 'original').mkdir(parents=True)
  for out, needle in ((work, 'is the workdir'), (work / 'models', 'inside the workdir'),
                      (tmp_path, 'a folder above the workdir')):
    for fmt in ('merged', 'peft'):
      with pytest.raises(UserError, match=needle):
        check_output(str(work), str(out), fmt)
  mine = tmp_path / 'notes'
  mine.mkdir()
  (mine / 'thesis.tex').write_text('x')
  (mine / 'config.json').write_text('{}')
  with pytest.raises(UserError, match=f"holds 'config.json' \\(and 1 more\\) and has no {MARKER}, so export did not write it"):
    check_output(str(work), str(mine), 'merged')
  (mine / 'thesis.tex').unlink()
  with pytest.raises(UserError, match="holds 'config.json' and has no"):  # export's own file names decide nothing
    check_output(str(work), str(mine), 'merged')
  (mine / MARKER).write_text('{"format": "merged"}')
  check_output(str(work), str(mine), 'merged')  # a previous merged export is replaced
  with pytest.raises(UserError, match='is an earlier merged export, not a peft one'):
    check_output(str(work), str(mine), 'peft')
  with pytest.raises(UserError, match='is a file'):
    check_output(str(work), str(mine / 'config.json'), 'merged')
  check_output(str(work), str(tmp_path / 'new'), 'peft')
  (tmp_path / 'empty').mkdir()
  check_output(str(work), str(tmp_path / 'empty'), 'merged')
  assert (work / 'models' / 'original').is_dir()

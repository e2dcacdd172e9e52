"""`prepare` end to end: outputs, resume, atomicity, families, the synthetic set and the real ML-100K."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from data_testing import independent_protocol, tiny_config, write_ml100k
from e2urec_jax.data import load_tokenized, make_batch
from e2urec_jax.data.prepare import prepare
from e2urec_jax.data.tokenizer import load_tokenizer
from e2urec_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_ML100K = os.path.join(REPO, '..', 'shared', 'data', 'ml-100k')


def _leftovers(workdir):
  return [p for p in os.listdir(workdir) if p.startswith('.tmp_') or p.endswith('.old')]


def test_prepare_writes_everything_and_counts_follow_protocol(tmp_path):
  raw, work = str(tmp_path / 'raw'), str(tmp_path / 'work')
  rows = write_ml100k(raw, num_users=16, num_items=25, per_user=15)
  config = tiny_config(raw)
  m = prepare(config, work)
  want = independent_protocol(rows, min_history=3, history_k=4, num_samples=1000, split=(0.6, 0.2, 0.2),
                              threshold=3.0)
  train_users = sorted({u for u, *_ in want['train']})
  forget_users = set(m['forget_users'])
  assert len(forget_users) == round(0.2 * len(train_users)) and forget_users <= set(train_users)
  n_forget = sum(u in forget_users for u, *_ in want['train'])
  assert m['counts'] == {'train': len(want['train']), 'valid': len(want['valid']), 'test': len(want['test']),
                         'forget': n_forget, 'retain': len(want['train']) - n_forget}
  for key in ('label_positive_rate', 'source_sha256', 'token_lengths', 'config', 'yes_id', 'no_id', 'layout'):
    assert key in m
  assert m['label_positive_rate']['test'] == pytest.approx(np.mean([y for _, _, y, _, _ in want['test']]), abs=1e-4)
  assert set(os.listdir(work)) >= {'config.json', 'tokenizer', 'data'} and not _leftovers(work)
  assert {'train.parquet', 'valid.parquet', 'test.parquet', 'manifest.json', 'tokens', 'hf_cache'} <= \
      set(os.listdir(os.path.join(work, 'data')))

  data = load_tokenized(work)
  tok = load_tokenizer(config.model, work)
  train = pd.read_parquet(os.path.join(work, 'data', 'train.parquet'))
  assert len(data.splits['train']) == len(train) and data.layout == 'encoder-decoder'
  np.testing.assert_array_equal(data.splits['train'].is_forget, train['user'].isin(forget_users))
  for k in (0, len(train) - 1):  # stored ids are the tokenizer's ids of the stored prompt text + eos
    ids = tok(train['prompt'][k], add_special_tokens=False)['input_ids'] + [data.eos_id]
    assert data.splits['train'].prompt_ids[k, :data.splits['train'].prompt_len[k]].tolist() == ids
    assert train['answer'][k] == ('Yes.' if train['label'][k] else 'No.')
  batch = make_batch(data, 'train', np.arange(4))
  assert batch['input_ids'].shape[1] in data.bucket_lengths
  assert data.vocab_size == len(tok) and data.answers['yes'][0] == data.yes_id


def test_prepare_resumes_and_redoes_on_changed_settings(tmp_path, capsys):
  raw, work = str(tmp_path / 'raw'), str(tmp_path / 'work')
  write_ml100k(raw)
  config = tiny_config(raw)
  prepare(config, work)
  manifest = os.path.join(work, 'data', 'manifest.json')
  stamp = os.stat(manifest).st_mtime_ns
  config.train.learning_rate = 0.123  # not a data setting
  prepare(config, work)
  assert os.stat(manifest).st_mtime_ns == stamp and 'already prepared' in capsys.readouterr().out
  assert json.load(open(os.path.join(work, 'config.json')))['train']['learning_rate'] == 0.123
  config.data.forget_fraction = 0.4
  m = prepare(config, work)
  assert os.stat(manifest).st_mtime_ns != stamp and m['config']['data']['forget_fraction'] == 0.4


def test_error_leaves_nothing_half_written(tmp_path):
  raw, work = str(tmp_path / 'raw'), str(tmp_path / 'work')
  write_ml100k(raw)
  with open(os.path.join(raw, 'u.item'), 'a', encoding='latin-1') as f:
    f.write('99|Broken line\n')
  with pytest.raises(UserError, match=r'u\.item line 16: expected 24 fields'):
    prepare(tiny_config(raw), work)
  assert os.listdir(work) == []  # no data/, no tokenizer/, no temp folders, no config.json
  # A failing re-prepare keeps the previous good data as it was.
  good = str(tmp_path / 'good')
  write_ml100k(good)
  prepare(tiny_config(good), work)
  before = open(os.path.join(work, 'data', 'manifest.json')).read()
  with pytest.raises(UserError):
    prepare(tiny_config(raw), work)
  assert open(os.path.join(work, 'data', 'manifest.json')).read() == before and not _leftovers(work)


def test_decoder_only_family(tmp_path):
  raw, work = str(tmp_path / 'raw'), str(tmp_path / 'work')
  write_ml100k(raw)
  config = tiny_config(raw)
  config.model.scratch.family = 'llama'
  m = prepare(config, work)
  data = load_tokenized(work)
  tok = load_tokenizer(config.model, work)
  train = pd.read_parquet(os.path.join(work, 'data', 'train.parquet'))
  prompt = train['prompt'][0]
  assert prompt.endswith('\nAnswer:') and data.layout == 'decoder-only' and data.bos_id == 3
  prompt_ids = tok(prompt, add_special_tokens=False)['input_ids']
  assert data.yes_id == tok(prompt + ' Yes.', add_special_tokens=False)['input_ids'][len(prompt_ids)]
  assert data.bucket_lengths[-1] >= m['tokens']['max_input_length'] + len(data.answers['yes']) - 1
  b = make_batch(data, 'train', [0])
  n = len(prompt_ids) + 1  # + bos
  assert b['input_ids'][0, 0] == 3 and b['input_ids'][0, n] == b['answer_labels'][0, 0]


def test_pretrained_tokenizer_folder_and_layout_from_model_type(tmp_path):
  """name_or_path = a local HF folder: the layout comes from config.json, the tokenizer is the model's."""
  from transformers import LlamaConfig, T5Config
  from e2urec_jax.data.tokenizer import train_tokenizer
  raw = str(tmp_path / 'raw')
  write_ml100k(raw)
  for family, layout, hf_config in (('t5', 'encoder-decoder', T5Config(vocab_size=400)),
                                    ('llama', 'decoder-only', LlamaConfig(vocab_size=400))):
    model_dir = str(tmp_path / family)
    hf_config.save_pretrained(model_dir)
    corpus = [f'The user is a male. Movie {i} (19{50 + i}) ***' for i in range(30)] + ['Answer: Yes. No.'] * 5
    train_tokenizer(corpus, 400, layout).save_pretrained(model_dir)
    config = tiny_config(raw)
    config.model.name_or_path = model_dir
    config.model.tokenizer = ''
    config.model.scratch.family = 't5' if family == 'llama' else 'llama'  # must be ignored
    config.data.max_shortened = 1.0  # this tiny vocabulary spells titles letter by letter: histories are cut
    m = prepare(config, str(tmp_path / f'work_{family}'))
    assert m['layout'] == layout and not os.path.exists(str(tmp_path / f'work_{family}' / 'tokenizer'))


def test_synthetic_data_is_learnable_and_planted(tmp_path):
  """The demo's data: strong main effects a simple model finds (a tiny T5 must reach AUC >= 0.6)."""
  from sklearn.feature_extraction.text import CountVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import roc_auc_score
  from scipy.sparse import csr_matrix, hstack
  config = tiny_config('')
  config.data.source = 'synthetic'
  config.data.num_samples = 4000
  config.data.history_k = 5
  config.data.min_history = 5
  work = str(tmp_path / 'work')
  m = prepare(config, work)
  assert os.path.exists(os.path.join(work, 'data', 'synthetic', 'planted.json'))
  assert 0.35 < m['label_positive_rate']['train'] < 0.7
  assert m['history_shown']['train']['truncated'] == 0
  train = pd.read_parquet(os.path.join(work, 'data', 'train.parquet'))
  test = pd.read_parquet(os.path.join(work, 'data', 'test.parquet'))
  words = CountVectorizer(token_pattern=r"[A-Za-z']+").fit(train['title'])
  features = lambda f: hstack([words.transform(f['title']),
                               csr_matrix([[np.mean(h)] for h in f['history_ratings']])]).tocsr()
  model = LogisticRegression(max_iter=2000).fit(features(train), train['label'])
  assert roc_auc_score(test['label'], model.predict_proba(features(test))[:, 1]) > 0.7
  # Generating again with the same seed gives the same files.
  again = prepare(config, str(tmp_path / 'again'))
  assert again['source_sha256'] == m['source_sha256']


def _cli(*args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'e2urec_jax', *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def test_cli_reports_bad_input_in_one_line(tmp_path):
  raw = str(tmp_path / 'raw')
  write_ml100k(raw)
  os.remove(os.path.join(raw, 'u.user'))
  r = _cli('prepare', '--config=configs/ml100k.py:cpu', f'--config.data.raw_dir={raw}', f'--workdir={tmp_path / "w"}',
           '--config.progress=False', '--config.jax_cache_dir=')
  assert r.returncode == 1
  assert r.stderr.strip().count('\n') == 0 and 'missing file' in r.stderr and 'u.user' in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REAL_ML100K), reason='no local ML-100K copy at ../shared/data/ml-100k')
def test_real_ml100k_through_the_cli(tmp_path):
  work = str(tmp_path / 'x')
  start = time.time()
  r = _cli('prepare', '--config=configs/ml100k.py:cpu', f'--config.data.raw_dir={REAL_ML100K}', f'--workdir={work}',
           '--config.progress=False', '--config.jax_cache_dir=')
  assert r.returncode == 0, r.stderr[-2000:]
  assert time.time() - start < 120
  m = json.load(open(os.path.join(work, 'data', 'manifest.json')))
  rows = [tuple(int(x) for x in line.split('\t')) for line in open(os.path.join(REAL_ML100K, 'u.data'))]
  want = independent_protocol(rows, min_history=5, history_k=0, num_samples=30_000, split=(0.6, 0.2, 0.2),
                              threshold=3.0)
  forget = set(m['forget_users'])
  train_users = {u for u, *_ in want['train']}
  n_forget = sum(u in forget for u, *_ in want['train'])
  assert m['counts'] == {'train': 18000, 'valid': 6000, 'test': 6000, 'forget': n_forget, 'retain': 18000 - n_forget}
  assert len(forget) == round(0.2 * len(train_users)) and forget <= train_users
  assert m['source_sha256']['u.data'] == '06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490'
  test = pd.read_parquet(os.path.join(work, 'data', 'test.parquet'))
  assert list(zip(test['user'], test['item'])) == [(u, i) for u, i, *_ in want['test']]
  assert [list(h) for h in test['history_items']] == [h for _, _, _, h, _ in want['test']]
  assert m['token_lengths']['all']['max'] <= 64
  # A few very long titles leave no room for the whole profile: counted, printed, and within budget.
  cut = sum(v['profile_cut'] for v in m['history_shown'].values())
  assert 0 < cut == m['prompt_budget']['shortened'] and m['prompt_budget']['share'] <= 0.01
  assert f'history shortened in 0 prompts, profile cut in {cut})' in r.stdout

"""The pretrained backbone (config.pretrain): a disjoint population, an HF folder, a cache that is reused."""
import os

import numpy as np
import pandas as pd
import pytest

from conftest import CACHE, ML100K, load_config
from e2urec_jax import config as config_lib
from e2urec_jax.errors import UserError


def _tiny(tmp_path):
  """configs/pretrained.py:test, smaller still: a backbone in seconds."""
  c = load_config('configs/pretrained.py:test')
  c.jax_cache_dir = CACHE
  c.progress = False
  c.pretrain.cache_dir = str(tmp_path / 'backbones')
  c.pretrain.num_users = 40
  c.pretrain.num_samples = 600
  c.pretrain.epochs = 1
  c.pretrain.eval_every = 1000
  return c


def test_synthetic_population_keeps_the_world_and_draws_other_people(tmp_path):
  from e2urec_jax.data import synthetic
  cfg = config_lib.default_config().data.synthetic
  synthetic.generate(cfg, 42, str(tmp_path / 'default'))
  synthetic.generate(cfg, 42, str(tmp_path / 'p0'), population=0)
  synthetic.generate(cfg, 42, str(tmp_path / 'p1'), population=1)
  read = lambda d, f: open(tmp_path / d / f, encoding='latin-1').read()  # noqa: E731
  for name in ('u.item', 'u.user', 'u.data'):  # population 0 is the draw the experiment always had
    assert read('default', name) == read('p0', name)
  assert read('p0', 'u.item') == read('p1', 'u.item')  # the same items, titles, genres
  assert read('p0', 'u.user') != read('p1', 'u.user')  # other people
  ratings = [pd.read_csv(tmp_path / d / 'u.data', sep='\t', names=['u', 'i', 'r', 't']) for d in ('p0', 'p1')]
  events = [set(zip(df.u, df.i, df.r, df.t)) for df in ratings]
  assert len(events[0] & events[1]) < 0.01 * len(events[0])  # their ratings are their own


@pytest.mark.skipif(not os.path.isdir(ML100K), reason='needs the local ML-100K copy')
def test_movielens_held_out_users_are_disjoint_stable_and_about_the_fraction():
  from e2urec_jax.data import movielens, readers
  from e2urec_jax.data.sources import check_ratings
  raw = movielens.read_ml100k(ML100K, strict=True)
  d = config_lib.default_config().data
  d.source = 'ml-100k'
  d.heldout_fraction = 0.3
  parts = {}
  for users in ('experiment', 'heldout'):
    d.users = users
    parts[users] = check_ratings(readers.held_out_users(raw, d), d)  # the data rules hold on the part
  exp, held = (set(parts[k].users['user']) for k in ('experiment', 'heldout'))
  assert not exp & held and exp | held == set(raw.users['user'])
  assert 0.25 < len(held) / len(raw.users) < 0.35
  assert set(parts['heldout'].ratings['user']) <= held and set(parts['experiment'].ratings['user']) <= exp
  d.users = 'heldout'
  assert set(readers.held_out_users(raw, d).users['user']) == held  # the same users every time
  d.heldout_fraction = 0.5  # a larger share holds the smaller one's users (one hash, one threshold)
  assert held <= set(readers.held_out_users(raw, d).users['user'])


def test_validate_refuses_a_backbone_on_the_experiments_own_users():
  c = load_config('configs/pretrained.py:ml100k')
  c.data.users = 'all'
  with pytest.raises(UserError, match=r"config.pretrain.enabled=True on ml-100k.*data.users='experiment'"):
    config_lib.validate(c)
  c = load_config('configs/pretrained.py')
  c.data.users = 'heldout'
  with pytest.raises(UserError, match="backbone's own users"):
    config_lib.validate(c)
  config_lib.validate(load_config('configs/pretrained.py:ml100k'))


def test_fingerprint_follows_what_the_backbone_reads(tmp_path):
  from e2urec_jax import backbone
  c = _tiny(tmp_path)
  base = backbone.fingerprint(c)
  same = c.copy_and_resolve_references()
  same.seed, same.seeds, same.unlearn.e2urec.alpha, same.train.learning_rate = 7, '7,8', 9.0, 0.5
  same.data.forget_fraction = 0.4
  assert backbone.fingerprint(same) == base  # the experiment's seeds, methods and fine-tuning recipe
  for key, value in (('pretrain.learning_rate', 0.01), ('pretrain.num_users', 41), ('model.scratch.d_model', 32),
                     ('data.synthetic.seed', 3), ('pretrain.seed', 1)):
    other = c.copy_and_resolve_references()
    section, field = key.rsplit('.', 1)
    node = other
    for part in section.split('.'):
      node = node[part]
    node[field] = value
    assert backbone.fingerprint(other) != base, key


def test_backbone_is_an_hf_folder_loaded_by_name_or_path_and_reused(tmp_path, capsys):
  from e2urec_jax import backbone
  from e2urec_jax.models import load_pretrained
  c = _tiny(tmp_path)
  record = backbone.resolve(c)
  assert not record['reused'] and record['time_s'] > 0
  hf = record['path']
  assert c.model.name_or_path == hf and c.model.tokenizer == ''
  assert {'config.json', 'model.safetensors', 'tokenizer.json'} <= set(os.listdir(hf))
  first = capsys.readouterr().out
  assert 'backbone: pretrained' in first and 'not charged' in first
  model, params, _ = load_pretrained(hf)  # the loader any HF checkpoint goes through
  assert model.family == 't5' and model.arch.d_model == c.model.scratch.d_model
  again = _tiny(tmp_path)  # a new run, another seed: the same backbone, not trained again
  again.seeds = '43'
  mtime = os.path.getmtime(os.path.join(hf, 'model.safetensors'))
  record2 = backbone.resolve(again, say=True)
  assert record2['reused'] and record2['path'] == hf and record2['time_s'] == record['time_s']
  assert os.path.getmtime(os.path.join(hf, 'model.safetensors')) == mtime
  assert 'backbone: reused' in capsys.readouterr().out
  leaves = [np.asarray(x) for x in __import__('jax').tree.leaves(params)]
  assert all(np.isfinite(x).all() for x in leaves)


def test_a_given_model_and_a_backbone_are_refused_together(tmp_path):
  from e2urec_jax import backbone
  c = _tiny(tmp_path)
  c.model.name_or_path = str(tmp_path / 'elsewhere')
  with pytest.raises(UserError, match='clear model.name_or_path, or set pretrain.enabled=False'):
    backbone.ensure(c)


@pytest.fixture(scope='module')
def pretrained_run(tmp_path_factory):
  """configs/pretrained.py:test as it is (seeds 42 and 43), its backbone in a fresh cache; the output kept."""
  import contextlib
  import io
  from e2urec_jax.experiment import run_experiment
  root = tmp_path_factory.mktemp('pretrained_run')
  c = load_config('configs/pretrained.py:test')
  c.jax_cache_dir = CACHE
  c.progress = False
  c.pretrain.cache_dir = str(root / 'backbones')
  c.unlearn.methods = c.repeat_methods = 'e2urec,oracle'  # Bad-T trains apart and changes neither: the suite's time
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    run_experiment(c, str(root / 'run'))
  return c, str(root / 'run'), out.getvalue()


@pytest.mark.slow
def test_a_run_from_the_backbone_reports_it_apart_and_evaluate_keeps_it(pretrained_run):
  from e2urec_jax import commands, runtime
  c, work, out = pretrained_run
  lines = out.splitlines()
  said = [i for i, line in enumerate(lines) if line.startswith(('backbone: pretrained ', 'backbone: reused '))]
  opening = [i for i, line in enumerate(lines) if line.startswith('run: ')]
  assert len(said) == 1 and lines[said[0]].startswith('backbone: pretrained ')  # once, for both seeds
  assert sum(line.startswith('backbone: pretraining ') for line in lines) == 1  # and trained once
  assert opening and said[0] < opening[0]  # the first screen says it, before the run's own line
  results = runtime.read_json(os.path.join(work, 'results.json'))
  bb = results['backbone']
  assert bb['path'] == c.model.name_or_path and bb['time_s'] > 0 and not bb['reused']
  assert results['config']['model']['name_or_path'] == bb['path']  # every model started from it
  assert '**Pretrained backbone** (pretrained by this run)' in open(os.path.join(work, 'results.md')).read()
  commands.evaluate(config_lib.load_saved(work), work)  # as `evaluate --workdir` does: the saved config
  again = runtime.read_json(os.path.join(work, 'results.json'))
  assert again['backbone']['path'] == bb['path'] and again['backbone']['reused']


@pytest.mark.slow
def test_the_oracle_shows_the_teacher_is_the_limit(pretrained_run):
  """What held on every seed of this variant (42-45, and 42-43 on 8 host devices): the oracle (E2URec's
  student towards the retrained model) ends 0.63-0.78x E2URec's symKL to retrain; E2URec's test AUC
  within 0.004 of the original's. Asserted on the two seeds' means with margin. Not asserted: E2URec
  closer than the original (in this tiny variant it is not, on any seed)."""
  from e2urec_jax import runtime
  _, work, _ = pretrained_run
  methods = runtime.read_json(os.path.join(work, 'results.json'))['methods']
  mean = lambda name, group, key: np.mean([row[group][key] for row in methods[name]['seeds']])  # noqa: E731
  assert mean('oracle', 'forget', 'sym_kl') < 0.9 * mean('e2urec', 'forget', 'sym_kl')
  assert abs(mean('e2urec', 'test', 'auc') - mean('original', 'test', 'auc')) < 0.02
  assert 'oracle' in methods['e2urec']['mechanism']  # beside the teacher, in E2URec's mechanism

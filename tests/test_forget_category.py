"""`forget --categories=USER:CATEGORY`: a user's ratings of one item category, resolved to those
(user, item) interactions and served as an interaction request: the deleted ratings are gone from
every file of the workdir (raw lines, prompts), the user's other ratings stay, the audit names
exactly those pairs, and `predict` serves the user's other items while refusing the deleted ones.

One module fixture: `train` on demo:test (a few steps), the user with the most train samples and a
genre that holds some but not all of their rated items; bad requests first (nothing changes), then
the request.
"""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import CACHE, REPO, file_digests, files_holding

TINY = ['--config=configs/demo.py:test', '--config.progress=False', f'--config.jax_cache_dir={CACHE}',
        '--config.train.max_steps=8', '--config.checkpoint.every_steps=4', '--config.augment.steps=3',
        '--config.unlearn.e2urec.steps=3', '--config.data.num_samples=600']


def _frames(work):
  return {s: pd.read_parquet(os.path.join(work, 'data', f'{s}.parquet')) for s in ('train', 'valid', 'test')}


def _config(work):
  from e2urec_jax import config as config_lib
  config = config_lib.load_saved(work)
  config.progress = False
  return config


def _raw_lines(work, user, items) -> list:
  """The raw copy's rating lines of `user` for `items` (bytes, as written)."""
  lines = open(os.path.join(work, 'data', 'synthetic', 'u.data'), 'rb').read().splitlines()
  return [ln for ln in lines if ln.split(b'\t')[0] == user.encode() and ln.split(b'\t')[1].decode() in items]


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp('category')
  work = str(root / 'work')
  r = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'fault_cli.py'), 'train', *TINY,
                      f'--workdir={work}'], cwd=REPO, capture_output=True, text=True, timeout=400,
                     env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert r.returncode == 0, r.stderr[-3000:]
  frames = _frames(work)
  categories = {str(i): c for i, c in json.load(open(os.path.join(work, 'data', 'item_categories.json'))).items()}
  train = frames['train']
  user = str(train.groupby('user_key').size().idxmax())
  rated = sorted(set().union(*(set(f.loc[f['user_key'] == user, 'item_key']) for f in frames.values())))
  raw = [ln.split(b'\t')[1].decode() for ln in
         open(os.path.join(work, 'data', 'synthetic', 'u.data'), 'rb').read().splitlines()
         if ln.split(b'\t')[0] == user.encode()]
  rated = sorted(set(rated) | set(raw))
  counts = {}
  for item in rated:
    for c in categories[item]:
      counts[c] = counts.get(c, 0) + 1
  genre = min((c for c, n in counts.items() if n < len(rated)), key=lambda c: (counts[c], c))
  deleted = [i for i in rated if genre in categories[i]]
  kept = [i for i in rated if genre not in categories[i]]
  prompts = {}
  for name in ('deleted', 'kept'):
    items = deleted if name == 'deleted' else kept
    mine = set().union(*(set(f.loc[(f['user_key'] == user) & f['item_key'].isin(items), 'prompt'])
                         for f in frames.values()))
    others = set().union(*(set(f.loc[~((f['user_key'] == user) & f['item_key'].isin(items)), 'prompt'])
                           for f in frames.values()))
    prompts[name] = sorted(mine - others)
  out = {'work': work, 'user': user, 'genre': genre, 'deleted': deleted, 'kept': kept,
         'key': str(root / 'operator' / 'forget.key'), 'prompts': prompts,
         'raw': {'deleted': _raw_lines(work, user, set(deleted)), 'kept': _raw_lines(work, user, set(kept))},
         'samples': {'deleted': int(((train['user_key'] == user) & train['item_key'].isin(deleted)).sum()),
                     'kept': int(((train['user_key'] == user) & train['item_key'].isin(kept)).sum())}}
  assert out['raw']['deleted'] and out['raw']['kept'] and prompts['deleted'] and prompts['kept']
  assert out['samples']['deleted'] and out['samples']['kept']
  out['refusals'] = _bad_requests(out)
  from e2urec_jax import commands
  commands.forget(_config(work), work, categories=f'{user}:{genre}', forget_key=out['key'])
  return out


def _bad_requests(s) -> dict:
  """Misspelt categories and users, and a genre the user never rated: one line each, nothing changed."""
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  work, user, genre = s['work'], s['user'], s['genre']
  before = file_digests(work)
  out = {}
  for name, spec in (('lower case', f'{user}:{genre.lower()}'), ('spaced', f'{user}:{genre} x'),
                     ('leading zero', f'0{user}:{genre}'), ('no colon', f'{user}-{genre}')):
    with pytest.raises(UserError) as e:
      commands.forget(_config(work), work, categories=spec, forget_key=s['key'])
    out[name] = str(e.value)
  assert file_digests(work) == before and not os.path.exists(s['key'])  # nothing scrubbed, no key, no audit
  return out


@pytest.mark.slow  # end to end (the module fixture trains)
def test_misspelt_requests_are_refused_naming_the_real_ids(served):
  user, genre, r = served['user'], served['genre'], served['refusals']
  assert all('\n' not in m for m in r.values()), r
  assert f"did you mean '{genre}'?" in r['lower case'] and 'not an item category of this run' in r['lower case']
  assert 'not an item category of this run; the categories are' in r['spaced']
  assert f"did you mean '{user}'?" in r['leading zero']
  assert 'is not USER:CATEGORY' in r['no colon']


@pytest.mark.slow  # end to end (the module fixture trains)
def test_the_deleted_ratings_are_gone_from_every_file_and_the_others_stay(served):
  work = served['work']
  needles = [('prompt', p.encode()) for p in served['prompts']['deleted']] + \
      [('raw line', ln) for ln in served['raw']['deleted']]
  assert files_holding(work, needles) == []
  raw = open(os.path.join(work, 'data', 'synthetic', 'u.data'), 'rb').read().splitlines()
  assert all(ln in raw for ln in served['raw']['kept'])
  frames = _frames(work)
  prompts = set().union(*(set(f['prompt']) for f in frames.values()))
  assert set(served['prompts']['kept']) <= prompts
  train = frames['train']
  assert int((train['user_key'] == served['user']).sum()) == served['samples']['kept']


@pytest.mark.slow  # end to end (the module fixture trains)
def test_the_audit_names_exactly_those_pairs(served):
  from e2urec_jax import forget_audit
  work, user = served['work'], served['user']
  audit = json.load(open(os.path.join(work, 'forget', 'audit_v1.json')))
  key = open(served['key'], 'rb').read().strip()
  assert audit['request'] == 'category' and audit['model'] == 'models/forget_v1'
  assert audit['subjects']['pairs'] == sorted(forget_audit.keyed(key, user, i) for i in served['deleted'])
  assert audit['subjects']['categories'] == [forget_audit.category_keyed(key, user, served['genre'])]
  assert audit['forget_set']['samples'] == served['samples']['deleted']
  assert audit['removed_rows']['data/synthetic/u.data'] == len(served['raw']['deleted'])
  assert f'"{user}"' not in json.dumps(audit) and f'"{served["genre"]}"' not in json.dumps(audit)  # hashes only
  lines = forget_audit.verify_audits(work, key_file=served['key'])
  assert lines == [lines[0]] and 'audit v1: MAC ok; category request of 1 user(s)' in lines[0]


@pytest.mark.slow  # end to end (the module fixture trains)
def test_predict_serves_the_users_other_items_and_refuses_the_deleted(served, tmp_path):
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  work, user = served['work'], served['user']
  ask = tmp_path / 'other.csv'
  ask.write_text('user_id,item_id\n' + ''.join(f'{user},{i}\n' for i in served['kept'][:3]))
  out = tmp_path / 'p.csv'
  commands.predict(_config(work), work, input=str(ask), output=str(out), model='forget_v1',
                   forget_key=served['key'])
  scored = pd.read_csv(out, dtype=str)
  assert list(scored['item_id']) == served['kept'][:3] and scored['p_yes'].astype(float).between(0, 1).all()
  ask.write_text(f'user_id,item_id\n{user},{served["kept"][0]}\n{user},{served["deleted"][0]}\n')
  with pytest.raises(UserError, match=f"line 3: interaction \\('{user}', '{served['deleted'][0]}'\\) was "
                                      'forgotten by forget request v1'):
    commands.predict(_config(work), work, input=str(ask), model='forget_v1', forget_key=served['key'])


@pytest.mark.slow  # end to end (the module fixture trains)
def test_the_same_request_again_has_nothing_left_to_forget(served, capsys):
  from e2urec_jax import commands
  work = served['work']
  before = file_digests(work)
  commands.forget(_config(work), work, categories=f'{served["user"]}:{served["genre"]}', forget_key=served['key'])
  assert 'nothing left to forget' in capsys.readouterr().out
  assert file_digests(work) == before


def test_category_requests_parse_inline_and_from_a_file(tmp_path):
  from e2urec_jax.errors import UserError
  from e2urec_jax.forget_request import read_request
  r = read_request(None, None, "196:Comedy, 305:Children's,196:Comedy")
  assert (r.kind, r.users, r.categories) == ('category', ['196', '305'], [('196', 'Comedy'), ('305', "Children's")])
  assert r.pairs == [] and r.given() == ('category', '196', '305', '196\x00Comedy', "305\x00Children's")
  f = tmp_path / 'cats.csv'
  f.write_text('user_id,category\n013,Sci-Fi\n')
  r = read_request(None, None, str(f))
  assert r.categories == [('013', 'Sci-Fi')] and r.where[('013', 'Sci-Fi')] == f'{f} line 2'
  for spec, match in (('196-Comedy', 'is not USER:CATEGORY'), (':Comedy', 'is not USER:CATEGORY'),
                      (',', 'names no USER:CATEGORY'), ('no/such.csv', 'no such file')):
    with pytest.raises(UserError, match=match):
      read_request(None, None, spec)
  f.write_text('user_id,genre\n1,Drama\n2,Drama,x\n')
  with pytest.raises(UserError, match='line 3: expected user_id,category'):
    read_request(None, None, str(f))
  with pytest.raises(UserError, match='not both --users and --categories'):
    read_request('196', None, '196:Comedy')

"""Forget requests, audits and predictions on ids as the source spells them, and a forget request
killed at each of its stages (the tester's privacy and data-loss findings).

1. One canonical id: the source's strings (the users/items `key` column, the raw copy's fields),
   compared exactly in forget, audit and predict. '03', '３', '¹⁹', '+3', '3<zero-width space>' or a
   1,000,000-digit id is refused with one line, suggesting the real id where it only differs by its
   spelling, and changes nothing (no scrub without unlearning, no audit with `model: null`).
2. A forget request killed while it trains, while it copies the data, between atomic_dir's two
   renames, before its deletions and before its audit, each time rerun: the rerun finishes it, and
   no byte of the user's raw ratings, profile line or prompts is left anywhere in the workdir
   (models/ and pretrained/ included), no staging folder either; `audit` refuses while one is there.
3. export and predict write only into a new folder/file or an earlier output of the same kind.

One module fixture: `train` on demo:test (a few steps); refusals run in-process, the forget
request and its kills as subprocesses (tests/fault_cli.py: E2UREC_TEST_KILL_AT_STEP, E2UREC_TEST_KILL_IN).
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import CACHE, REPO, file_digests, files_holding

pytestmark = pytest.mark.slow  # end to end

TINY = ['--config=configs/demo.py:test', '--config.progress=False', f'--config.jax_cache_dir={CACHE}',
        '--config.train.max_steps=8', '--config.checkpoint.every_steps=4', '--config.augment.steps=3',
        '--config.unlearn.e2urec.steps=3', '--config.data.num_samples=600']
FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}
SUPERSCRIPT = dict(zip('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹'))
ARABIC_INDIC = {str(d): chr(0x0660 + d) for d in range(10)}


def _spell(key: str, table: dict) -> str:
  return ''.join(table[c] for c in key)


def variants(key: str) -> dict:
  """Ways to write the numeric id `key` that read the same to a person but are other strings."""
  return {'leading zero': '0' + key, 'full-width': _spell(key, FULL_WIDTH), 'superscript': _spell(key, SUPERSCRIPT),
          'arabic-indic': _spell(key, ARABIC_INDIC), 'plus sign': '+' + key, 'minus sign': '-' + key,
          'zero-width space': key + '\u200b'}


def _cli(*args, env=None, key_file=None):
  return subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'fault_cli.py'), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=400,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', E2UREC_FORGET_KEY=key_file or '', **(env or {})))


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  """A trained run (`train`), the user with the most train samples, one item of theirs, and a key path."""
  root = tmp_path_factory.mktemp('ids')
  work = str(root / 'base')
  r = _cli('train', *TINY, f'--workdir={work}')
  assert r.returncode == 0, r.stderr[-3000:]
  train = pd.read_parquet(os.path.join(work, 'data', 'train.parquet'))
  user = str(train.groupby('user_key').size().idxmax())
  item = str(train.loc[train['user_key'] == user, 'item_key'].iloc[0])
  assert user.isdigit() and item.isdigit()
  return {'root': str(root), 'work': work, 'user': user, 'item': item, 'key': str(root / 'operator' / 'forget.key'),
          'train_samples': int((train['user_key'] == user).sum())}


def _config(work):
  from e2urec_jax import config as config_lib
  config = config_lib.load_saved(work)
  config.progress = False
  return config


def _forget(base, work, **request):
  from e2urec_jax import commands
  commands.forget(_config(work), work, forget_key=base['key'], **request)


# ------------------------------------------------------------------ 1. one canonical id
@pytest.mark.parametrize('how', list(variants('3')))
def test_a_misspelt_user_is_refused_naming_the_real_one_and_nothing_changes(base, how):
  from e2urec_jax.errors import UserError
  work, user = base['work'], base['user']
  spelt = variants(user)[how]
  before = file_digests(work)
  with pytest.raises(UserError) as e:
    _forget(base, work, users=spelt)
  msg = str(e.value)
  assert '\n' not in msg and f"did you mean '{user}'?" in msg and 'not a user of this run' in msg, msg
  assert file_digests(work) == before  # nothing scrubbed, no audit, no model
  assert not os.path.exists(os.path.join(work, 'forget', 'audit_v1.json'))
  assert not os.path.exists(base['key'])  # a refused first request creates no key


def test_ids_that_are_no_number_python_reads_are_one_line_refusals(base, tmp_path):
  """'²' (a digit to str.isdigit, not to int()) and a 1,000,000-digit id: no ValueError traceback."""
  from e2urec_jax.errors import UserError
  work = base['work']
  huge = tmp_path / 'huge.txt'
  huge.write_text('1' * 1_000_000 + '\n')
  for spec in ('²', str(huge)):
    with pytest.raises(UserError) as e:
      _forget(base, work, users=spec)
    assert '\n' not in str(e.value) and len(str(e.value)) < 400, str(e.value)[:500]
  pairs = tmp_path / 'huge_pairs.csv'
  pairs.write_text(f'{base["user"]},{"9" * 1_000_000}\n')
  with pytest.raises(UserError) as e:
    _forget(base, work, interactions=str(pairs))
  assert '\n' not in str(e.value) and len(str(e.value)) < 400 and 'characters' in str(e.value)


@pytest.mark.parametrize('side', ['user', 'item'])
@pytest.mark.parametrize('how', ['leading zero', 'full-width', 'superscript', 'plus sign', 'zero-width space'])
def test_a_misspelt_interaction_is_refused_naming_the_real_id(base, tmp_path, side, how):
  from e2urec_jax.errors import UserError
  work, user, item = base['work'], base['user'], base['item']
  pair = (variants(user)[how], item) if side == 'user' else (user, variants(item)[how])
  path = tmp_path / 'pairs.csv'
  path.write_text(f'user_id,item_id\n{pair[0]},{pair[1]}\n')
  before = file_digests(work)
  with pytest.raises(UserError) as e:
    _forget(base, work, interactions=str(path))
  msg = str(e.value)
  want = user if side == 'user' else item
  assert '\n' not in msg and f"did you mean '{want}'?" in msg and f'not {"a user" if side == "user" else "an item"}' \
      in msg and 'line 2' in msg, msg
  assert file_digests(work) == before


def test_space_around_an_id_is_a_separator_everywhere(base):
  """' 3 ' is id '3' in forget's parsing, in audit's and in predict's (the same parser): never a new id."""
  from e2urec_jax.forget_request import read_request
  from e2urec_jax.eval.predict import read_pairs
  user, item = base['user'], base['item']
  assert read_request(f' {user} ,\t{user}\u3000', None).users == [user]
  path = os.path.join(base['root'], 'spaced.csv')
  with open(path, 'w') as f:
    f.write(f' {user} , {item}\u00a0\n')
  assert read_request(None, path).pairs == [(user, item)]
  assert list(read_pairs(path)['user_id']) == [user] and list(read_pairs(path)['item_id']) == [item]


@pytest.mark.parametrize('how', ['leading zero', 'full-width', 'plus sign', 'zero-width space'])
def test_predict_refuses_misspelt_ids_naming_the_real_one(base, tmp_path, how):
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  work, user, item = base['work'], base['user'], base['item']
  for pair, want in (((variants(user)[how], item), user), ((user, variants(item)[how]), item)):
    path = tmp_path / 'ask.csv'
    path.write_text(f'user_id,item_id\n{pair[0]},{pair[1]}\n')
    with pytest.raises(UserError, match=f"did you mean '{want}'"):
      commands.predict(_config(work), work, input=str(path), model='original', forget_key=base['key'])


# ------------------------------------------------------------------ 2. a forget request killed at each stage
KILLS = [  # (stage, env of the killed run, what it must have left)
    ('training', {'E2UREC_TEST_KILL_AT_STEP': 'e2urec:2'}, None),
    ('copying the data', {'E2UREC_TEST_KILL_IN': 'e2urec_jax.forget_scrub:_filter_tokens'}, '.tmp_data_'),
    ('between the renames', {'E2UREC_TEST_KILL_IN': 'e2urec_jax.local_files:publish@/data'}, 'data.old'),
    ('before the deletions', {'E2UREC_TEST_KILL_IN': 'e2urec_jax.forget_scrub:delete'}, None),
    ('before the audit', {'E2UREC_TEST_KILL_IN': 'e2urec_jax.forget_audit:build_audit'}, None),
]


def _traces(work: str, user: str) -> dict:
  """What the data says of `user` that no one else shares: raw rating lines, profile line, prompts."""
  raw = os.path.join(work, 'data', 'synthetic')
  ratings = [ln for ln in open(os.path.join(raw, 'u.data'), 'rb').read().splitlines() if ln.split(b'\t')[0] ==
             user.encode()]
  profile = [ln for ln in open(os.path.join(raw, 'u.user'), 'rb').read().splitlines() if ln.split(b'|')[0] ==
             user.encode()]
  frames = [pd.read_parquet(os.path.join(work, 'data', f'{s}.parquet')) for s in ('train', 'valid', 'test')]
  mine = set().union(*(set(f.loc[f['user_key'] == user, 'prompt']) for f in frames))
  others = set().union(*(set(f.loc[f['user_key'] != user, 'prompt']) for f in frames))
  prompts = [p.encode() for p in sorted(mine - others)]
  assert ratings and len(profile) == 1 and prompts
  return {'ratings': ratings, 'profile': profile, 'prompts': prompts}


@pytest.fixture(scope='module')
def killed(base):
  """The base copied; forget --users=U killed at each stage in turn, each time rerun; then the last rerun."""
  work = os.path.join(base['root'], 'killed')
  shutil.copytree(base['work'], work)
  key = os.path.join(base['root'], 'operator_killed', 'forget.key')
  user = base['user']
  out = {'work': work, 'key': key, 'traces': _traces(work, user), 'runs': [], 'left': []}
  for stage, env, mark in KILLS:
    r = _cli('forget', f'--users={user}', *TINY, f'--workdir={work}', env=env, key_file=key)
    left = sorted(n for n in os.listdir(work) if n.startswith('.tmp_') or n.endswith('.old'))
    out['runs'].append((stage, r))
    out['left'].append((stage, mark, left))
    if stage == 'copying the data':  # its staging copy is there: audit has nothing to report yet, forget runs on
      out['pending'] = os.path.exists(os.path.join(work, 'forget', 'pending.json'))
  out['final'] = _cli('forget', f'--users={user}', *TINY, f'--workdir={work}', key_file=key)
  return out


def test_each_killed_stage_is_finished_by_the_rerun(killed, base):
  for stage, r in killed['runs']:
    assert r.returncode == -signal.SIGKILL, (stage, r.stdout[-1000:], r.stderr[-2000:])
  for stage, mark, left in killed['left']:
    if mark:
      assert [n for n in left if mark in n], (stage, left)  # the kill left what it was writing
  final = killed['final']
  assert final.returncode == 0, final.stderr[-3000:]
  assert 'forget v1: e2urec on' in final.stdout
  work = killed['work']
  audit = json.load(open(os.path.join(work, 'forget', 'audit_v1.json')))
  assert audit['model'] == 'models/forget_v1' and audit['forget_set']['samples'] == base['train_samples']
  assert audit['removed_rows']['data/train.parquet'] == base['train_samples']
  assert not os.path.exists(os.path.join(work, 'forget', 'pending.json'))


def test_no_byte_of_the_user_is_left_anywhere_after_the_reruns(killed):
  """Every file of the workdir, models/ and pretrained/ included: raw rating lines, profile line, prompts."""
  from e2urec_jax import runtime
  work, traces = killed['work'], killed['traces']
  assert runtime.staging_leftovers(work) == []
  assert not [n for n in os.listdir(work) if n.startswith('.tmp') or n.endswith(('.old', '.replaced'))]
  needles = [(k, n) for k, ns in traces.items() for n in ns]
  assert files_holding(work, needles) == []


def test_audit_and_predict_know_the_user_only_by_the_real_id(killed, base, tmp_path):
  from e2urec_jax import commands, forget_audit
  from e2urec_jax.errors import UserError
  work, user, item = killed['work'], base['user'], base['item']
  lines = forget_audit.verify_audits(work, key_file=killed['key'], users=user)
  assert f'user {user}: forgotten by request v1' in lines
  for how in ('leading zero', 'full-width', 'plus sign'):
    with pytest.raises(UserError, match=f"did you mean '{user}'\\? \\(forgotten by request v1\\)"):
      forget_audit.verify_audits(work, key_file=killed['key'], users=variants(user)[how])
  ask = tmp_path / 'ask.csv'
  ask.write_text(f'user_id,item_id\n{user},{item}\n')
  with pytest.raises(UserError, match='was forgotten by forget request v1'):
    commands.predict(_config(work), work, input=str(ask), model='forget_v1', forget_key=killed['key'])
  ask.write_text(f'user_id,item_id\n0{user},{item}\n')
  with pytest.raises(UserError, match='not in the synthetic data'):
    commands.predict(_config(work), work, input=str(ask), model='forget_v1', forget_key=killed['key'])


def test_audit_refuses_while_a_staging_folder_is_there_and_the_next_writer_removes_it(killed, base):
  from e2urec_jax import forget_audit
  from e2urec_jax.errors import UserError
  work, user = killed['work'], base['user']
  left = os.path.join(work, '.tmp_data_left')
  os.makedirs(os.path.join(left, 'synthetic'))
  with open(os.path.join(left, 'synthetic', 'u.user'), 'wb') as f:
    f.write(killed['traces']['profile'][0])
  with pytest.raises(UserError, match='.tmp_data_left, left by an interrupted command'):
    forget_audit.verify_audits(work, key_file=killed['key'])
  r = _cli('forget', f'--users={user}', *TINY, f'--workdir={work}', key_file=killed['key'])
  assert r.returncode == 0 and 'already forgotten' in r.stdout and '.tmp_data_left' in r.stdout, r.stderr[-2000:]
  assert not os.path.exists(left)
  assert forget_audit.verify_audits(work, key_file=killed['key'])


def test_every_staging_name_is_found_and_removed_or_put_back(tmp_path):
  from e2urec_jax import runtime
  from e2urec_jax.errors import UserError
  w = tmp_path / 'w'
  for d in ('models/e2urec', 'phases/original/ckpt/4.orbax-checkpoint-tmp-17', 'models/augmented.old', '.tmp_data_x',
            'data.old', '.data.replaced', 'models/.tmp_model_dir'):
    (w / d).mkdir(parents=True)
    (w / d / 'f').write_text('x')
  for f in ('.tmp_abc', 'phases/original/metrics.jsonl.tmp', 'models/e2urec/.stamp.json.tmp', '.part_u.data',
            '.probe123', 'models/e2urec/.tmp_model_xyz'):
    (w / f).write_text('x')
  (w / 'models' / 'augmented').mkdir()
  keep = ['.lock', 'config.json', 'models/e2urec/.stamp.json', 'models/e2urec/model.safetensors']
  for f in keep:
    (w / f).write_text('x')
  left = runtime.staging_leftovers(str(w))
  assert len(left) == 12, left
  with pytest.raises(UserError, match='left by an interrupted command'):
    runtime.refuse_staging(str(w), 'audit')
  done = runtime.clean_staging(str(w))
  assert len(done) == 12 and runtime.staging_leftovers(str(w)) == []
  assert (w / 'data' / 'f').exists()  # data.old put back: no data folder was there
  assert not (w / 'models' / 'augmented.old').exists() and (w / 'models' / 'augmented').is_dir()
  for f in keep:
    assert (w / f).exists()


# ------------------------------------------------------------------ 3. outputs never delete what the project did not write
def test_export_never_replaces_a_folder_it_did_not_write(base, tmp_path):
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  work = base['work']
  app = tmp_path / 'app'
  (app / 'tokenized_corpus').mkdir(parents=True)
  (app / 'config.json').write_text('{"mine": 1}')
  (app / 'api_tokens.txt').write_text('secret')
  proj = tmp_path / 'proj'
  (proj / 'base' / 'data').mkdir(parents=True)
  (proj / 'base' / 'data' / 'important.txt').write_text('keep me')
  for out, fmt in ((app, 'merged'), (proj, 'peft')):
    with pytest.raises(UserError) as e:
      commands.export(_config(work), work, output=str(out), model='original', fmt=fmt)
    assert '\n' not in str(e.value) and 'export did not write it' in str(e.value)
  assert (app / 'api_tokens.txt').read_text() == 'secret' and (app / 'tokenized_corpus').is_dir()
  assert (proj / 'base' / 'data' / 'important.txt').read_text() == 'keep me'
  new = tmp_path / 'new'
  commands.export(_config(work), work, output=str(new), model='original')
  assert (new / '.e2urec_export.json').exists() and (new / 'model.safetensors').exists()
  commands.export(_config(work), work, output=str(new), model='original')  # an earlier merged export: replaced
  with pytest.raises(UserError, match='an earlier merged export, not a peft one'):
    commands.export(_config(work), work, output=str(new), model='original', fmt='peft')


def test_peft_export_writes_its_marker_and_replaces_only_its_own(killed, tmp_path):
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  work = killed['work']
  out = tmp_path / 'peft'
  commands.export(_config(work), work, output=str(out), model='forget_v1', fmt='peft')
  marker = json.load(open(out / '.e2urec_export.json'))
  assert marker['format'] == 'peft' and (out / 'adapter_model.safetensors').exists()
  commands.export(_config(work), work, output=str(out), model='forget_v1', fmt='peft')
  with pytest.raises(UserError, match='not a merged one'):
    commands.export(_config(work), work, output=str(out), model='original')


def test_predict_never_overwrites_a_file_it_did_not_write(base, tmp_path):
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  work = base['work']
  ask = tmp_path / 'ask.csv'
  ask.write_text(f'user_id,item_id\n{base["user"]},{base["item"]}\n')
  mine = tmp_path / 'notes.csv'
  mine.write_text('user_id,item_id\nmy own notes\n')
  with pytest.raises(UserError, match='not a predictions file of an earlier predict'):
    commands.predict(_config(work), work, input=str(ask), output=str(mine), model='original')
  assert mine.read_text() == 'user_id,item_id\nmy own notes\n'
  (tmp_path / 'p.csv.tmp').write_text('also mine')
  commands.predict(_config(work), work, input=str(ask), output=str(tmp_path / 'p.csv'), model='original')
  commands.predict(_config(work), work, input=str(ask), output=str(tmp_path / 'p.csv'), model='original')  # its own
  assert (tmp_path / 'p.csv').read_text().startswith('user_id,item_id,p_yes\n')
  assert (tmp_path / 'p.csv.tmp').read_text() == 'also mine'
  assert not [n for n in os.listdir(tmp_path) if n.startswith('.tmp')]
  assert np.isfinite(float((tmp_path / 'p.csv').read_text().splitlines()[1].split(',')[2]))

"""`forget` requests on a small trained run (issue 8): versioned adapters, audits, and a workdir
that no longer holds the forgotten records anywhere (checked file by file, binary files included).

One module fixture: `augment` (the original and the experiment's augmented model, a few steps),
then request v1 (two users, the run's saved config), then request v2 (one interaction) that is
killed mid-training, blocked for another request, and finished by rerunning it.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import CACHE, REPO

TINY = ['--config=configs/demo.py:test', '--config.progress=False', f'--config.jax_cache_dir={CACHE}',
        '--config.train.max_steps=8', '--config.checkpoint.every_steps=4', '--config.augment.steps=3',
        '--config.unlearn.e2urec.steps=3', '--config.data.num_samples=600']


def _cli(*args, env=None):
  """The CLI (tests/fault_cli.py: with the fault hooks of `env`, tests/fault_hooks.py)."""
  return subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'fault_cli.py'), *args], cwd=REPO,
                        capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))


def _start(*args):
  return subprocess.Popen([sys.executable, '-m', 'e2urec_jax', *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _wait(p):
  stdout, stderr = p.communicate(timeout=300)
  return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def _frames(workdir):
  return {s: pd.read_parquet(os.path.join(workdir, 'data', f'{s}.parquet')) for s in ('train', 'valid', 'test')}


def _records(workdir, users):
  """What the data holds about `users` before the request: ids, prompts and token rows unique to them."""
  frames = _frames(workdir)
  mine = {s: f[f['user'].isin(users)] for s, f in frames.items()}
  others = set().union(*(set(f.loc[~f['user'].isin(users), 'prompt']) for f in frames.values()))
  prompts = sorted(set().union(*(set(m['prompt']) for m in mine.values())) - others)
  token_rows = []
  for s, f in frames.items():
    ids = np.load(os.path.join(workdir, 'data', 'tokens', s, 'prompt_ids.npy'))
    token_rows += [ids[i] for i in np.flatnonzero(f['user'].isin(users).to_numpy())]
  return {'prompts': prompts, 'token_rows': token_rows, 'counts': {s: len(m) for s, m in mine.items()}}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  work = str(tmp_path_factory.mktemp('forget'))
  out = {'work': work, 'cli': {}}
  r = _cli('augment', *TINY, f'--workdir={work}')
  assert r.returncode == 0, r.stderr[-3000:]
  train = _frames(work)['train']
  counts = train.groupby('user').size()
  protocol_forget = int(train.loc[train['is_forget'], 'user'].value_counts().index[0])
  retain_user = int(train.loc[~train['is_forget'], 'user'].value_counts().index[0])
  out['users'] = [protocol_forget, retain_user]
  out['before'] = _records(work, out['users'])
  # Bad requests first: they fail before any change (and before taking the request lock).
  test_row = _frames(work)['test'].iloc[0]  # an interaction only a test sample holds: nothing trained on it
  test_pair = os.path.join(work, '..', 'test_pair.csv')
  with open(test_pair, 'w') as f:
    f.write(f"{test_row['user_key']},{test_row['item_key']}\n")
  procs = {'unknown': _start('forget', '--users=999999', f'--workdir={work}'),
           'empty': _start('forget', '--users=', f'--workdir={work}'),
           'no_train_samples': _start('forget', f'--interactions={test_pair}', f'--workdir={work}')}
  out['cli'].update({k: _wait(p) for k, p in procs.items()})
  out['cli']['v1'] = _cli('forget', f'--users={protocol_forget},{retain_user}', f'--workdir={work}')
  out['after_v1'] = {'listing': _walk(work)}
  # v2: one interaction of a third user: its target sample and the samples that show it in their history.
  rest = train[~train['user'].isin(out['users'])]
  third = int(counts[rest['user'].unique()].idxmax())
  row = rest[rest['user'] == third].iloc[0]
  pair = (str(row['user_key']), str(row['item_key']))
  out['pair'] = (third, int(row['item']))
  pairs_file = os.path.join(work, '..', 'pairs.csv')
  with open(pairs_file, 'w') as f:
    f.write(f'user_id,item_id\n{pair[0]},{pair[1]}\n')
  out['cli']['v2_killed'] = _cli('forget', f'--interactions={pairs_file}', f'--workdir={work}',
                                 env={'E2UREC_TEST_KILL_AT_STEP': 'e2urec:2'})
  out['pending_after_kill'] = os.path.exists(os.path.join(work, 'forget', 'pending.json'))
  out['cli']['other_while_pending'] = _cli('forget', f'--users={third}', f'--workdir={work}')
  out['cli']['v2'] = _cli('forget', f'--interactions={pairs_file}', f'--workdir={work}')
  out['cli']['again'] = _cli('forget', f'--users={protocol_forget}', f'--workdir={work}')
  return out


def _walk(root):
  return sorted(os.path.relpath(os.path.join(r, f), root) for r, _, fs in os.walk(root) for f in fs)


def _audit(work, n):
  return json.load(open(os.path.join(work, 'forget', f'audit_v{n}.json')))


@pytest.mark.slow
def test_requests_succeed_and_bad_ones_are_one_line_errors(run):
  cli = run['cli']
  for name in ('v1', 'v2', 'again'):
    assert cli[name].returncode == 0, (name, cli[name].stderr[-3000:])
  for name, needle in (('unknown', "user '999999' is not in the data of this workdir"),
                       ('empty', '--users lists no user ids: the forget set would be empty'),
                       ('no_train_samples', 'the forget set is empty'),
                       ('other_while_pending', 'forget request v2 on')):
    err = cli[name].stderr.strip()
    assert cli[name].returncode == 1 and err.count('\n') == 0 and needle in err, (name, err)
  assert cli['v2_killed'].returncode == -signal.SIGKILL and run['pending_after_kill']
  assert 'already forgotten (request v1)' in cli['again'].stdout


@pytest.mark.slow
def test_no_record_of_the_forgotten_users_is_left_in_the_workdir(run):
  """Every file, binary included: parquet rows, token arrays, raw copy, manifest, caches, prompt text."""
  work, users, before = run['work'], run['users'], run['before']
  assert all(before['counts'][s] > 0 for s in ('train',)) and before['prompts']
  prompts = [p.encode() for p in before['prompts']]
  token_rows = {r.tobytes() for r in before['token_rows']}
  for rel in _walk(work):
    path = os.path.join(work, rel)
    blob = open(path, 'rb').read()
    assert not [p for p in prompts if p in blob], rel  # prompt text, e.g. in an Arrow cache or JSON
    if rel.endswith('.parquet'):
      frame = pd.read_parquet(path)
      if 'user' in frame:
        assert not frame['user'].isin(users).any(), rel
        assert not frame['prompt'].isin(before['prompts']).any(), rel
    if rel.endswith('user_id.npy'):
      assert not np.isin(np.load(path), users).any(), rel
    if rel.endswith('prompt_ids.npy'):
      assert not token_rows & {r.tobytes() for r in np.load(path)}, rel
    if rel.endswith('u.data'):
      assert not [ln for ln in blob.decode('latin-1').splitlines() if int(ln.split('\t')[0]) in users], rel
    if rel.endswith('u.user'):
      assert not [ln for ln in blob.decode('latin-1').splitlines() if int(ln.split('|')[0]) in users], rel
    if rel.endswith('.arrow'):
      pytest.fail(f'tokenisation cache {rel} left behind')
  manifest = json.load(open(os.path.join(work, 'data', 'manifest.json')))
  assert not set(users) & set(manifest['forget_users']) and not set(users) & set(manifest['tokens']['forget_users'])
  assert not {str(u) for u in users} & set(manifest['forget_user_keys'])
  planted = json.load(open(os.path.join(work, 'data', 'synthetic', 'planted.json')))
  assert all(planted['bias'][u - 1] is None for u in users)
  counts = {s: len(f) for s, f in _frames(work).items()}
  assert manifest['counts']['train'] == counts['train'] and manifest['counts']['test'] == counts['test']


@pytest.mark.slow
def test_intermediate_models_trained_on_them_are_deleted(run):
  work = run['work']
  files = _walk(work)
  assert not [f for f in files if '/ckpt/' in f]  # no resume checkpoint of any phase
  assert not [f for f in files if 'augmented' in f]  # the experiment's theta_a (it saw a forgotten user) and v1's/v2's
  audit = _audit(work, 1)
  assert {'models/augmented', 'phases/augmented', 'phases/forget_v1/augmented'} <= set(audit['deleted'])


@pytest.mark.slow
def test_interaction_request_removes_the_pair_from_targets_and_histories(run):
  work = run['work']
  user, item = run['pair']
  for split, frame in _frames(work).items():
    rows = frame[frame['user'] == user]
    assert not (rows['item'] == item).any(), split
    assert not any(item in list(h) for h in rows['history_items']), split
  assert (_frames(work)['train']['user'] == user).any()  # the user's other samples stay
  lines = open(os.path.join(work, 'data', 'synthetic', 'u.data')).read().splitlines()
  assert not [ln for ln in lines if ln.split('\t')[:2] == [str(user), str(item)]]


@pytest.mark.slow
def test_versions_chain_and_audits_hold_salted_hashes_only(run):
  from e2urec_jax.train import artifacts
  work, users = run['work'], run['users']
  salt = open(os.path.join(work, 'forget', 'salt.key')).read().strip()
  a1, a2 = _audit(work, 1), _audit(work, 2)
  assert a1['method'] == a2['method'] == 'e2urec' and a1['base'] == 'models/original'
  assert a2['base'] == 'models/forget_v1/merged' and a2['request'] == 'interactions'
  want = sorted(hashlib.sha256((salt + '\x00' + str(u)).encode()).hexdigest() for u in users)
  assert a1['subjects']['sha256'] == want
  for audit in (a1, a2):
    text = json.dumps(audit)
    assert salt not in text
    assert audit['time_utc'].endswith('+00:00') and audit['forget_set']['samples'] > 0
    assert 0.0 <= audit['metrics']['forget_jsd_to_pre_unlearning'] <= np.log(2)
    assert 0.0 <= audit['metrics']['mia_auc'] <= 1.0
    assert 'only retraining' in audit['remains']['statement'].lower()
    assert 'models/original' in audit['remains']['models_that_may_encode_these_records']
  assert 'models/forget_v1' in a2['remains']['models_that_may_encode_these_records']
  adapters, meta = artifacts.load_adapters(os.path.join(work, 'models', 'forget_v2'))
  assert meta['base_dir'] == os.path.join(work, 'models', 'forget_v1', 'merged') and adapters
  _, meta1 = artifacts.load_adapters(os.path.join(work, 'models', 'forget_v1'))
  assert meta1['base_dir'] == os.path.join(work, 'models', 'original')
  assert not os.path.exists(os.path.join(work, 'forget', 'pending.json'))


def test_request_parsing(tmp_path):
  from e2urec_jax import forget
  from e2urec_jax.errors import UserError
  ids = tmp_path / 'ids.txt'
  ids.write_text('# users who asked\n196\n305, 12\n\n196\n')
  assert forget.parse_users(str(ids)) == ['12', '196', '305']
  assert forget.parse_users('7, 3') == ['3', '7']
  with pytest.raises(UserError, match='no such file'):
    forget.parse_users(str(tmp_path / 'nope.txt'))
  ids.write_text('# nobody yet\n')
  with pytest.raises(UserError, match='lists no user ids'):
    forget.parse_users(str(ids))
  pairs = tmp_path / 'pairs.csv'
  pairs.write_text('user_id,item_id\n1,2\n1\t3\n')
  assert forget.parse_interactions(str(pairs)) == [('1', '2'), ('1', '3')]
  assert forget.read_request(None, str(pairs)).users == ['1']
  pairs.write_text('1,2\n1,2,3\n')
  with pytest.raises(UserError, match=r'pairs\.csv line 2: expected user_id,item_id'):
    forget.parse_interactions(str(pairs))
  with pytest.raises(UserError, match='forget needs --users'):
    forget.read_request(None, None)
  with pytest.raises(UserError, match='not both'):
    forget.read_request('1', str(pairs))

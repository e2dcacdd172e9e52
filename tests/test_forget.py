"""`forget` requests on a small trained run (issue 8): versioned adapters, audits, and a workdir
that no longer holds the forgotten records anywhere (checked file by file, binary files included).

One module fixture: `augment` (the original and the experiment's augmented model, a few steps),
then request v1 (two users, the run's saved config), then request v2 (one interaction) that is
killed mid-training, blocked for another request, and finished by rerunning it, then request v3
(interactions that no train sample holds: a test sample's target and a raw rating that formed
no sample) that removes records without training. The operator's key lives outside the workdir
(E2UREC_FORGET_KEY); `predict` and `audit` are checked against the forgotten users.
"""
import hashlib
import hmac
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


KEY_ENV = {}  # E2UREC_FORGET_KEY: the operator's key file, outside the workdir (set by the fixture)


def _cli(*args, env=None):
  """The CLI (tests/fault_cli.py: with the fault hooks of `env`, tests/fault_hooks.py)."""
  return subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'fault_cli.py'), *args], cwd=REPO,
                        capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu', **{**KEY_ENV, **(env or {})}))


def _start(*args):
  return subprocess.Popen([sys.executable, '-m', 'e2urec_jax', *args], cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=dict(os.environ, JAX_PLATFORMS='cpu', **KEY_ENV))


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
  KEY_ENV['E2UREC_FORGET_KEY'] = out['key_file'] = str(tmp_path_factory.mktemp('operator') / 'forget.key')
  # Bad requests first: they fail before any change (and before taking the request lock).
  procs = {'unknown': _start('forget', '--users=999999', f'--workdir={work}'),
           'empty': _start('forget', '--users=', f'--workdir={work}')}
  out['cli'].update({k: _wait(p) for k, p in procs.items()})
  out['key_after_bad'] = os.path.exists(out['key_file'])  # refused first requests create no key
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
  # v3: records no model trained on: a test sample's interaction, and a user's earliest raw rating
  # (too early to have min_history earlier ratings: it formed no sample, it is only in the raw copy).
  gone = set(out['users'])
  test_row = next(r for _, r in _frames(work)['test'].iterrows() if r['user'] not in gone and r['user'] != third)
  raw = pd.read_csv(os.path.join(work, 'data', 'synthetic', 'u.data'), sep='\t', header=None,
                    names=['user', 'item', 'rating', 'time'])
  sampled = set().union(*({(u, i) for u, i in zip(f['user'], f['item'])} for f in _frames(work).values()))
  shown = set().union(*({(u, i) for u, h in zip(f['user'], f['history_items']) for i in h}
                        for f in _frames(work).values()))
  raw_only = next((int(u), int(i)) for u, i in raw.sort_values('time')[['user', 'item']].itertuples(index=False)
                  if u not in gone and u != third and (u, i) not in sampled | shown)
  out['v3_pairs'] = [(int(test_row['user']), int(test_row['item'])), raw_only]
  v3_file = os.path.join(work, '..', 'v3.csv')
  with open(v3_file, 'w') as f:
    f.write(f"{test_row['user_key']},{test_row['item_key']}\n{raw_only[0]},{raw_only[1]}\n")
  out['cli']['v3'] = _cli('forget', f'--interactions={v3_file}', f'--workdir={work}')
  # The served model and the key: forgotten users are refused (the check needs the key).
  ask = os.path.join(work, '..', 'ask.csv')
  with open(ask, 'w') as f:
    f.write(f'user_id,item_id\n{pair[0]},{pair[1]}\n{protocol_forget},{pair[1]}\n')
  no_key = {'E2UREC_FORGET_KEY': ''}
  out['cli']['predict_no_key'] = _cli('predict', f'--input={ask}', '--model=forget_v2', f'--workdir={work}',
                                      env=no_key)
  out['cli']['predict_forgotten'] = _cli('predict', f'--input={ask}', '--model=forget_v2', f'--workdir={work}')
  allowed = os.path.join(work, '..', 'allowed.csv')  # the v2 interaction: its user and item are still in the data
  with open(allowed, 'w') as f:
    f.write(f'{pair[0]},{pair[1]}\n')
  out['cli']['predict_allowed'] = _cli('predict', f'--input={allowed}', '--model=forget_v2', f'--workdir={work}',
                                       '--allow-forgotten', f'--output={work}/../scores.csv')
  out['cli']['audit'] = _cli('audit', f'--users={protocol_forget},{third}', f'--workdir={work}')
  return out


def _walk(root):
  return sorted(os.path.relpath(os.path.join(r, f), root) for r, _, fs in os.walk(root) for f in fs)


def _audit(work, n):
  return json.load(open(os.path.join(work, 'forget', f'audit_v{n}.json')))


@pytest.mark.slow
def test_requests_succeed_and_bad_ones_are_one_line_errors(run):
  cli = run['cli']
  for name in ('v1', 'v2', 'again', 'v3', 'predict_allowed', 'audit'):
    assert cli[name].returncode == 0, (name, cli[name].stderr[-3000:])
  for name, needle in (('unknown', "user '999999' is not in the data of this workdir"),
                       ('empty', '--users lists no user ids: the forget set would be empty'),
                       ('other_while_pending', 'forget request v2 on'),
                       ('predict_no_key', 'needs the key: pass --forget_key=FILE'),
                       ('predict_forgotten', 'line 2: interaction ')):
    err = cli[name].stderr.strip()
    assert cli[name].returncode == 1 and err.count('\n') == 0 and needle in err, (name, err)
  assert 'was forgotten by forget request v2' in cli['predict_forgotten'].stderr
  assert not run['key_after_bad'] and 'created the forget key' in cli['v1'].stdout
  assert cli['v2_killed'].returncode == -signal.SIGKILL and run['pending_after_kill']
  assert 'already forgotten (request v1)' in cli['again'].stdout
  assert 'no model changed' in cli['v3'].stdout
  lines = cli['audit'].stdout.splitlines()
  assert [ln for ln in lines if ln.startswith('audit v')] == [ln for ln in lines if 'MAC ok' in ln] and \
      len([ln for ln in lines if 'MAC ok' in ln]) == 3, lines
  assert f'user {run["users"][0]}: forgotten by request v1' in lines
  assert f'user {run["pair"][0]}: in no audit' in lines  # v2 forgot one interaction of this user, not the user


@pytest.mark.slow
def test_records_no_model_trained_on_are_removed_without_training(run):
  """v3: a test sample's interaction and a raw rating that formed no sample; removed, no model."""
  work = run['work']
  audit = _audit(work, 3)
  assert audit['model'] is None and audit['method'] is None and 'no model was trained on them' in \
      audit['remains']['statement']
  assert not os.path.exists(os.path.join(work, 'models', 'forget_v3'))
  raw = pd.read_csv(os.path.join(work, 'data', 'synthetic', 'u.data'), sep='\t', header=None)
  held = set(zip(raw[0], raw[1]))
  for u, i in run['v3_pairs']:
    assert (u, i) not in held
    for split, frame in _frames(work).items():
      assert not ((frame['user'] == u) & (frame['item'] == i)).any(), split


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
def test_versions_chain_and_audits_hold_keyed_hashes_only(run):
  from e2urec_jax import forget_audit
  from e2urec_jax.train import artifacts
  work, users = run['work'], run['users']
  key = open(run['key_file'], 'rb').read().strip()
  assert os.stat(run['key_file']).st_mode & 0o077 == 0  # a secret: owner only
  assert not os.path.exists(os.path.join(work, 'forget', 'salt.key'))
  a1, a2 = _audit(work, 1), _audit(work, 2)
  assert a1['method'] == a2['method'] == 'e2urec' and a1['base'] == 'models/original'
  assert a2['base'] == 'models/forget_v1/merged' and a2['request'] == 'interactions'
  want = sorted(hmac.new(key, str(u).encode(), hashlib.sha256).hexdigest() for u in users)
  assert a1['subjects']['users'] == want and a1['subjects']['scheme'] == 'hmac-sha256'
  for audit in (a1, a2):
    text = json.dumps(audit)
    assert key.decode() not in text
    assert audit['mac'] == forget_audit.mac(audit, key)
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


@pytest.mark.slow
def test_the_audit_cannot_be_reversed_from_the_workdir_alone(run):
  """Every id 1..10^5 tried against audit v1 under every key-sized file of the workdir (and none):
  no forgotten user comes out; under the operator's key (outside the workdir) both do."""
  work, users = run['work'], run['users']
  audit = _audit(work, 1)
  hashes = set(audit['subjects']['users'])
  ids = [str(i).encode() for i in range(1, 100_001)]
  candidates = [b'']
  for rel in _walk(work):
    path = os.path.join(work, rel)
    if os.path.getsize(path) <= 256:
      blob = open(path, 'rb').read()
      candidates += [blob, blob.strip()]

  def recovered(key):
    return {int(i) for i in ids if hmac.new(key, i, hashlib.sha256).hexdigest() in hashes} | \
        {int(i) for i in ids if hashlib.sha256(key + b'\x00' + i).hexdigest() in hashes}

  for key in dict.fromkeys(candidates):
    assert not recovered(key)
  assert recovered(open(run['key_file'], 'rb').read().strip()) == set(users)


def test_request_parsing(tmp_path):
  from e2urec_jax import forget_request
  from e2urec_jax.errors import UserError
  ids = tmp_path / 'ids.txt'
  ids.write_text('# users who asked\n196\n305, 12\n\n196\n')
  read = forget_request.read_request
  assert read(str(ids), None).users == ['12', '196', '305'] and read(str(ids), None).kind == 'users'
  assert read('7, 3', None).users == ['3', '7']
  with pytest.raises(UserError, match='no such file'):
    read(str(tmp_path / 'nope.txt'), None)
  ids.write_text('# nobody yet\n')
  with pytest.raises(UserError, match='lists no user ids'):
    read(str(ids), None)
  pairs = tmp_path / 'pairs.csv'
  pairs.write_text('user_id,item_id\n1,2\n1\t3\n1,2\n')
  request = read(None, str(pairs))
  assert request.pairs == [('1', '2'), ('1', '3')] and request.users == ['1'] and request.kind == 'interactions'
  assert request.where[('1', '3')] == f'{pairs} line 3'
  pairs.write_text('1,2\n1,2,3\n')
  with pytest.raises(UserError, match=r'pairs\.csv line 2: expected user_id,item_id'):
    read(None, str(pairs))
  with pytest.raises(UserError, match='forget needs --users'):
    forget_request.read_request(None, None)
  with pytest.raises(UserError, match='not both'):
    forget_request.read_request('1', str(pairs))

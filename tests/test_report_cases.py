"""The report and the forget audit as a new user met them, end to end on one tiny run (E2URec and
NegGrad, one seed):

5. `evaluate --model=e2urec` on a finished run merges E2URec's rows into the report: the other
   rows, the seeds and the summary stay (recomputed from the rows), and it says so; killed between
   the rename of results.json and that of results.md, the next command puts the new results.md
   beside the new results.json; a SIGTERM while it writes keeps the previous pair and says so.
6. Every forget user of the experiment deleted by a forget request: `evaluate` and `run` report an
   empty forget set, with the test metrics, instead of crashing.
7. A deleted audit: below the latest one (a gap), or the latest one while its model is served:
   `audit` names it and fails; `predict` and `forget` refuse.
14. A truncated audit: `audit`, `predict` and `forget` name the file in one line.
Kills and signals run the CLI as a subprocess (tests/fault_cli.py, tests/fault_hooks.py's kill_in) on
the run's saved config (config.json); the rest runs in-process.
"""
import contextlib
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, tiny_scored_run_config

pytestmark = pytest.mark.slow  # end to end


def _cli(*args, env=None):
  return subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'fault_cli.py'), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=400,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))


def _json(work):
  return json.load(open(os.path.join(work, 'results.json')))


def _md(work):
  return open(os.path.join(work, 'results.md')).read()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  from e2urec_jax.experiment import run_experiment
  config = tiny_scored_run_config()
  work = str(tmp_path_factory.mktemp('report') / 'run')
  run_experiment(config, work)
  return config, work


def _with_sentinels(trained, root) -> str:
  """A copy of the run whose report (both files) says E2URec's test AUC is 0.123 and NegGrad's whole
  cost 999 s: what evaluate must replace, and what it must keep."""
  from e2urec_jax.eval import report
  from e2urec_jax.methods import spec
  _, work = trained
  copy = os.path.join(str(root), 'copy')
  shutil.copytree(work, copy)
  results = _json(copy)
  results['methods']['e2urec']['test']['auc'] = 0.123
  results['methods']['neggrad']['time_s'] = 999.0
  report.write_report(copy, results, order=spec.report_order())
  return copy


# ------------------------------------------------------------------ 5. evaluate --model
def test_evaluate_one_model_merges_its_rows_into_the_report(trained, tmp_path, capsys):
  from e2urec_jax import commands
  config, work = trained
  copy = _with_sentinels(trained, tmp_path)
  capsys.readouterr()
  commands.evaluate(config, copy, model='e2urec')
  out = capsys.readouterr().out
  assert f'evaluate: merged the rows of e2urec into {copy}/results.json; kept original, retrain, neggrad' in out
  run, merged = _json(work), _json(copy)
  assert list(merged['methods']) == ['original', 'retrain', 'e2urec', 'neggrad'] and merged['seeds'] == [42]
  e2u = merged['methods']['e2urec']
  assert e2u['test']['auc'] == pytest.approx(run['methods']['e2urec']['test']['auc'])  # scored again
  assert e2u['forget']['sym_kl'] == pytest.approx(run['methods']['e2urec']['forget']['sym_kl'])
  assert merged['methods']['neggrad']['time_s'] == 999.0  # kept as it was
  retrain_s = merged['methods']['retrain']['time_s']
  assert merged['summary']['time_ratio']['neggrad'] == pytest.approx(999.0 / retrain_s)  # recomputed from the rows
  md = _md(copy)
  assert '| `neggrad` |' in md and '| `original` |' in md and f"| `e2urec` | {e2u['test']['auc']:.4f} |" in md


def test_evaluate_killed_between_the_two_files_is_finished_by_the_next_command(trained, tmp_path):
  copy = _with_sentinels(trained, tmp_path)
  r = _cli('evaluate', '--model=e2urec', f'--workdir={copy}',
           env={'E2UREC_TEST_KILL_IN': 'e2urec_jax.eval.report_files:_rename@results.md'})
  assert r.returncode == -9, r.stderr[-3000:]
  auc = _json(copy)['methods']['e2urec']['test']['auc']
  assert auc != 0.123 and '| `e2urec` | 0.1230 |' in _md(copy)  # the mix the tester found, journal beside it
  r = _cli('table', f'--workdir={copy}')  # any later command that opens the workdir
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'finished publishing the report an interrupted command had decided on: results.md' in r.stdout
  assert f'| `e2urec` | {auc:.4f} |' in _md(copy) and '0.1230' not in _md(copy)
  assert not [n for n in os.listdir(copy) if n.startswith(('.tmp_', '.report_'))]


def test_sigterm_while_evaluate_writes_keeps_the_previous_report_and_says_so(trained, tmp_path):
  from e2urec_jax import interrupts, runtime
  copy = _with_sentinels(trained, tmp_path)
  before = {n: open(os.path.join(copy, n), 'rb').read() for n in ('results.json', 'results.md')}
  r = _cli('evaluate', '--model=e2urec', f'--workdir={copy}',
           env={'E2UREC_TEST_KILL_IN': 'e2urec_jax.eval.report_files:_stage@results.md',
                'E2UREC_TEST_KILL_SIGNAL': 'TERM'})
  assert r.returncode == 143, (r.returncode, r.stderr[-3000:])
  assert interrupts.MESSAGES['evaluate'] in r.stderr and 'checkpoint' not in r.stderr
  assert {n: open(os.path.join(copy, n), 'rb').read() for n in before} == before
  assert runtime.staging_leftovers(copy) == []


# ------------------------------------------------------------------ 6, 7, 14: forget requests
@pytest.fixture(scope='module')
def forgotten(trained, tmp_path_factory):
  """A copy of the run after two forget requests: v1 removes a test sample's interaction (no train
  sample holds it: no model), v2 forgets every forget user of the experiment (models/forget_v2)."""
  from e2urec_jax import commands
  config, work = trained
  root = tmp_path_factory.mktemp('forgotten')
  copy, key = str(root / 'run'), str(root / 'operator' / 'forget.key')
  shutil.copytree(work, copy)
  manifest = json.load(open(os.path.join(copy, 'data', 'manifest.json')))
  users = manifest['forget_user_keys']
  test = pd.read_parquet(os.path.join(copy, 'data', 'test.parquet'))
  row = test[~test['user_key'].astype(str).isin(users)].iloc[0]
  pairs = root / 'pairs.csv'
  pairs.write_text(f"user_id,item_id\n{row['user_key']},{row['item_key']}\n")
  commands.forget(config, copy, interactions=str(pairs), forget_key=key)
  commands.forget(config, copy, users=','.join(users), forget_key=key)
  ask = root / 'ask.csv'
  ask.write_text(f"user_id,item_id\n{row['user_key']},{row['item_key']}\n")
  return {'config': config, 'work': copy, 'key': key, 'ask': str(ask), 'other': str(row['user_key'])}


def test_an_empty_forget_set_is_reported_by_evaluate_and_run(forgotten, capsys):
  from e2urec_jax import commands
  from e2urec_jax.experiment import run_experiment
  config, work = forgotten['config'], forgotten['work']
  assert os.path.isdir(os.path.join(work, 'models', 'forget_v2'))
  note = ('the forget set is empty: every forget user was deleted by forget requests v2; forget metrics are not '
          'computed')
  for command in (lambda: commands.evaluate(config, work), lambda: run_experiment(config, work)):
    command()
    results = _json(work)
    assert results['forget_set'] == {'samples': 0, 'users': 0, 'note': note}
    assert list(results['methods']) == ['original', 'retrain', 'e2urec', 'neggrad']
    for name, row in results['methods'].items():
      assert 0.0 < row['test']['auc'] < 1.0 and row['test']['ranking']['positives'] > 0, name
      assert set(row['forget'].values()) == {None} and set(row['mia'].values()) == {None}, name
    assert f'**Forget set**: {note}.' in _md(work) and note in capsys.readouterr().out


@contextlib.contextmanager
def _audits_changed(work, change):
  """The forget folder with `change` applied, put back afterwards."""
  forget = os.path.join(work, 'forget')
  keep = {n: open(os.path.join(forget, n), 'rb').read() for n in os.listdir(forget) if n.startswith('audit_v')}
  change(forget)
  try:
    yield
  finally:
    for name, data in keep.items():
      open(os.path.join(forget, name), 'wb').write(data)


def _refusals(forgotten, match):
  """predict and forget, each refused with one line matching `match` before any work."""
  from e2urec_jax import commands
  from e2urec_jax.errors import UserError
  config, work, key = forgotten['config'], forgotten['work'], forgotten['key']
  with pytest.raises(UserError, match=match):
    commands.predict(config, work, input=forgotten['ask'], model='forget_v2', forget_key=key)
  with pytest.raises(UserError, match=match):
    commands.forget(config, work, users=forgotten['other'], forget_key=key)
  assert not os.path.exists(os.path.join(work, 'forget', 'pending.json'))  # forget started nothing


def test_audit_names_a_missing_version_below_the_latest(forgotten):
  from e2urec_jax import forget_audit
  from e2urec_jax.errors import UserError
  work, key = forgotten['work'], forgotten['key']
  assert [ln.split(';')[0] for ln in forget_audit.verify_audits(work, key_file=key)] == \
      ['audit v1: MAC ok', 'audit v2: MAC ok']
  with _audits_changed(work, lambda d: os.remove(os.path.join(d, 'audit_v1.json'))):
    with pytest.raises(UserError) as e:
      forget_audit.verify_audits(work, key_file=key)
    assert 'audit v1: MISSING: forget/audit_v1.json is missing while audit v2 exists' in str(e.value)
    assert 'audit v2: MAC ok' in str(e.value) and '\n' not in str(e.value)
    _refusals(forgotten, 'audit v1: MISSING')


def test_audit_names_a_served_model_whose_audit_was_deleted(forgotten):
  from e2urec_jax import forget_audit
  from e2urec_jax.errors import UserError
  work, key = forgotten['work'], forgotten['key']
  with _audits_changed(work, lambda d: os.remove(os.path.join(d, 'audit_v2.json'))):
    with pytest.raises(UserError, match='audit v2: MISSING: forget/audit_v2.json is missing, and models/forget_v2 '
                                        'has no audit'):
      forget_audit.verify_audits(work, key_file=key)
    _refusals(forgotten, 'models/forget_v2 has no audit')


def test_a_truncated_audit_is_named_by_audit_predict_and_forget(forgotten):
  work, key = forgotten['work'], forgotten['key']
  path = os.path.join(work, 'forget', 'audit_v1.json')

  def truncate(_):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
  with _audits_changed(work, truncate):
    r = subprocess.run([sys.executable, '-m', 'e2urec_jax', 'audit', f'--forget_key={key}', f'--workdir={work}'],
                       cwd=REPO, capture_output=True, text=True, timeout=200, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert r.returncode == 1 and r.stderr.strip().count('\n') == 0, r.stderr[-3000:]
    assert r.stderr.startswith(f'error: {path} is corrupt or truncated (')
    _refusals(forgotten, f'{path} is corrupt or truncated')

"""The report as one set, and `evaluate --model=X` merging X's rows into it (fast: no model).

1. results.json, results.md and the plots are published together (eval/report_files.py): a
   process killed at each step of the publish (tests/fault_hooks.py's kill_in, in a subprocess)
   leaves, once the next command has taken the workdir's lock, the old set or the new one, whole:
   never results.json of one report beside results.md of another, and no staging file.
2. What an interrupt prints is what is true of the interrupted command (interrupts.MESSAGES).
3. The merge (eval/report_merge.py): a report taken apart by seed and put together again with one
   method's rows replaced is the report `run` would have written with those rows, means over seeds,
   fairness gap changes and summary included; every other row is kept as it was.
The end-to-end cases (a real evaluate killed and interrupted, an empty forget set, audits) are in
tests/test_report_cases.py.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from e2urec_jax.eval import report, report_files, report_merge, seed_report
from e2urec_jax.methods import spec  # noqa: F401  (registers the methods: rows_scored_with reads them)

OLD = {'results.json': b'{"report": "old"}', 'results.md': b'# old\n', 'test_auc.png': b'old png'}
NEW = {'results.json': b'{"report": "new"}', 'results.md': b'# new\n', 'test_auc.png': b'new png'}
PUBLISH = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from fault_hooks import install_kill_in
install_kill_in(sys.argv[2])
from e2urec_jax.eval import report_files
report_files.publish(sys.argv[1], {new!r})
"""
STEPS = [  # (where the process is killed, which report the next command finds)
    ('e2urec_jax.eval.report_files:_stage@results.json', 'old'),
    ('e2urec_jax.eval.report_files:_stage@results.md', 'old'),
    ('e2urec_jax.eval.report_files:_write_journal', 'old'),
    ('e2urec_jax.local_files:publish@.report_journal.json', 'old'),  # the journal written, not yet renamed into place
    ('e2urec_jax.eval.report_files:_rename@results.json', 'new'),
    ('e2urec_jax.eval.report_files:_rename@results.md', 'new'),  # results.json new, results.md old on disk
    ('e2urec_jax.eval.report_files:_rename@test_auc.png', 'new'),
    ('e2urec_jax.eval.report_files:_remove_journal', 'new'),
]


def _files(work):
  return {name: open(os.path.join(work, name), 'rb').read() for name in OLD}


@pytest.mark.parametrize('where,found', STEPS)
def test_a_publish_killed_at_each_step_leaves_the_old_or_the_new_report_whole(tmp_path, where, found):
  from e2urec_jax import runtime, workdir_lock
  work = str(tmp_path)
  report_files.publish(work, OLD)
  script = PUBLISH.format(repo=REPO, tests=os.path.join(REPO, 'tests'), new=NEW)
  r = subprocess.run([sys.executable, '-c', script, work, where], capture_output=True, text=True, timeout=60)
  assert r.returncode == -9, (where, r.stderr[-2000:])  # killed there
  on_disk = _files(work)
  if on_disk not in (OLD, NEW):  # a mix only while the journal says which report was decided
    assert report_files.pending(work), (where, on_disk)
  if where.endswith('_rename@results.md'):  # the moment the tester killed evaluate at: the mix is on disk
    assert on_disk['results.json'] == NEW['results.json'] and on_disk['results.md'] == OLD['results.md']
  with workdir_lock.hold(work, 'evaluate'):  # what the next command that opens the workdir does first
    pass
  assert _files(work) == (OLD if found == 'old' else NEW), where
  assert runtime.staging_leftovers(work) == [] and not report_files.pending(work)


def test_table_finishes_a_decided_report_before_reading_it(tmp_path, capsys):
  from e2urec_jax import commands
  work = str(tmp_path)
  results = _combined()
  report_files.publish(work, {'results.json': json.dumps(results).encode(), 'results.md': b'# old\n'})
  new = dict(results)
  new['methods'] = {**results['methods'], 'e2urec': {**results['methods']['e2urec'], 'time_s': 99.0}}
  staged = {'results.json': json.dumps(report.plain(new)).encode(), 'results.md': b'# new\n'}
  for name, data in staged.items():  # a publish killed between the journal and the renames
    open(report_files.staged_path(work, name), 'wb').write(data)
  open(os.path.join(work, report_files.JOURNAL), 'w').write(json.dumps({'files': list(staged)}))
  commands.table(None, work)
  assert json.load(open(os.path.join(work, 'results.json')))['methods']['e2urec']['time_s'] == 99.0
  assert open(os.path.join(work, 'results.md')).read() == '# new\n'
  assert 'finished publishing the report' in capsys.readouterr().out


def test_an_interrupt_says_what_is_true_of_the_command():
  from e2urec_jax import interrupts, main
  try:
    main._say_on_interrupt('train')
    assert interrupts.message() == 'interrupted: the last checkpoint is kept; rerun the same command to resume'
    main._say_on_interrupt('evaluate')
    assert interrupts.message().startswith('interrupted: the previous report (results.json, results.md) is kept')
    assert 'checkpoint' not in interrupts.message()
    report_files._DECIDED.append('/w')  # the new report decided: that is what an interrupt leaves then
    assert interrupts.message() == interrupts.EVALUATE_PUBLISHED
    for command in main.COMMANDS:
      main._say_on_interrupt(command)
      text = interrupts.message()
      assert ('checkpoint' in text) == (command in ('train', 'retrain', 'augment', 'unlearn', 'run', 'sequence')), \
          command
  finally:
    report_files._DECIDED.clear()
    interrupts.set_message(interrupts.MESSAGE)


# ------------------------------------------------------------------ 3. the merge
def _row(sym_kl, auc, time_s, gap):
  return {'test': {'auc': auc, 'logloss': 0.5, 'acc': 0.7},
          'forget': {k: 0.1 for k in report.FORGET_KEYS} | {'sym_kl': sym_kl, 'jsd': sym_kl / 4},
          'fairness': {'auc_active': 0.7, 'auc_inactive': 0.7 - gap, 'gap': gap},
          'time_s': time_s, 'unlearn_time_s': time_s, 'compile_s': 1.0, 'trainable_params': 10,
          'trainable_fraction': 0.1, 'checkpoint_bytes': 100, 'peak_memory_bytes': None}


def _seed(seed, orig, e2u, neggrad, gap=0.02):
  methods = {'original': _row(orig, 0.80, 50.0, 0.01), 'retrain': _row(0.0, 0.79, 40.0, 0.0),
             'e2urec': _row(e2u, 0.78, 10.0, gap), 'neggrad': _row(neggrad, 0.70, 30.0, 0.05)}
  return {'methods': methods, 'noise_floor': {'jsd': 0.02, 'sym_kl': 0.1 + seed / 1000, 'l2': 0.1},
          'mia': {'attacks': [], 'reference_model': None}, 'seeds': [seed],
          'trajectories': {str(seed): {'e2urec': [{'step': 5, 'sym_kl': e2u}], 'neggrad': [{'step': 5, 'sym_kl': 1}]}},
          'config': {'seed': seed}, 'env': {'jax': 'x', 'devices': []}}


def _combined(per_seed=None):
  per_seed = per_seed or {42: _seed(42, 0.6, 0.3, 0.9), 43: _seed(43, 0.5, 0.2, 0.8)}
  return report.plain(seed_report.combine(per_seed))  # as read back from results.json


def _merged(old, new_per_seed, replaced):
  order = ('original', 'retrain', 'e2urec', 'neggrad')
  parts = report_merge.merge(report_merge.split_seeds(old), new_per_seed, replaced, order=order)
  return report.plain(report_merge.assemble(parts))


@pytest.mark.parametrize('model', ['e2urec', 'original'])
def test_merging_one_method_over_seeds_is_the_report_run_would_write(model):
  before = {42: _seed(42, 0.6, 0.3, 0.9), 43: _seed(43, 0.5, 0.2, 0.8)}
  after = {42: _seed(42, 0.4, 0.25, 0.9, gap=-0.03), 43: _seed(43, 0.45, 0.15, 0.8, gap=0.04)}
  new_rows = {s: dict(after[s], methods={model: after[s]['methods'][model]},
                      trajectories={str(s): {model: after[s]['trajectories'][str(s)].get(model, [])}})
              for s in after}
  for s in new_rows:
    if not new_rows[s]['trajectories'][str(s)][model]:
      new_rows[s]['trajectories'] = {}
  expected = {s: dict(before[s], methods={**before[s]['methods'], model: after[s]['methods'][model]},
                      trajectories={str(s): {**before[s]['trajectories'][str(s)],
                                             **new_rows[s].get('trajectories', {}).get(str(s), {})}})
              for s in before}
  from e2urec_jax.eval import fairness
  for part in expected.values():
    fairness.with_gap_change(part['methods'])
  merged = _merged(_combined(before), new_rows, [model])
  want = _combined(expected)
  assert merged['methods'] == want['methods']
  assert merged['summary'] == want['summary'] and merged['seeds'] == [42, 43]
  assert merged['noise_floor'] == want['noise_floor'] and merged['trajectories'] == want['trajectories']
  kept = [n for n in merged['methods'] if n != model]
  for name in kept:  # every other row's numbers are the old ones (their gap change follows a new original)
    old_seeds = _combined(before)['methods'][name]['seeds']
    assert [dict(e, fairness=None) for e in merged['methods'][name]['seeds']] == \
        [dict(e, fairness=None) for e in old_seeds]


def test_merging_into_a_one_seed_report():
  one = _seed(42, 0.6, 0.3, 0.9)
  old = report.plain(dict(one, summary=seed_report.summary(one)))
  new = _seed(42, 0.6, 0.5, 0.9, gap=0.2)
  new['methods'] = {'e2urec': dict(new['methods']['e2urec'], time_s=20.0)}
  merged = _merged(old, {42: new}, ['e2urec'])
  assert list(merged['methods']) == ['original', 'retrain', 'e2urec', 'neggrad'] and merged['seeds'] == [42]
  assert merged['methods']['neggrad'] == old['methods']['neggrad']
  assert merged['methods']['e2urec']['forget']['sym_kl'] == 0.5
  assert merged['methods']['e2urec']['fairness']['gap_change'] == pytest.approx(0.2 - 0.01)
  assert merged['summary']['time_ratio'] == {'e2urec': 20.0 / 40.0, 'neggrad': 30.0 / 40.0}
  assert 'seeds' not in merged['methods']['e2urec'] and 'seed' not in merged['methods']['e2urec']


def test_the_rows_evaluated_with_a_model():
  available = ['original', 'retrain', 'e2urec', 'e2urec[seed=5]', 'e2urec[alpha=4]', 'neggrad', 'oracle']
  assert report_merge.rows_scored_with('neggrad', available) == ['neggrad']
  assert report_merge.rows_scored_with('original', available) == ['original']
  # E2URec's mechanism holds the oracle's distance: scoring one scores the other with it
  assert report_merge.rows_scored_with('e2urec', available) == ['e2urec', 'e2urec[seed=5]', 'oracle']
  assert set(report_merge.rows_scored_with('oracle', available)) == {'oracle', 'e2urec', 'e2urec[seed=5]',
                                                                       'e2urec[alpha=4]'}

"""The headline table and criteria (eval/headline.py, the `table` command)."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from e2urec_jax.errors import UserError
from e2urec_jax.eval import headline


def _row(kl_by_seed: dict, auc_by_seed: dict) -> dict:
  seeds = [{'seed': s, 'forget': {'sym_kl': kl_by_seed[s]}, 'test': {'auc': auc_by_seed[s]}} for s in kl_by_seed]
  return {'forget': {'sym_kl': sum(kl_by_seed.values()) / len(kl_by_seed)}, 'seeds': seeds}


def _results() -> dict:
  return {
      'methods': {'original': _row({1: 0.30, 2: 0.50}, {1: 0.80, 2: 0.82}),
                  'retrain': _row({1: 0.0, 2: 0.0}, {1: 0.79, 2: 0.79}),
                  'e2urec': _row({1: 0.10, 2: 0.20}, {1: 0.80, 2: 0.81}),
                  'badt': _row({1: 0.25, 2: 0.35}, {1: 0.78, 2: 0.80})},
      'noise_floor': {'sym_kl': 0.05, 'seeds': [{'seed': 1, 'sym_kl': 0.04}, {'seed': 2, 'sym_kl': 0.06}]},
      'summary': {'gap_closed': {'e2urec': {'sym_kl': 0.7143}, 'badt': {'sym_kl': 0.2857}},
                  'time_ratio': {'e2urec': 0.30, 'badt': 0.6},
                  'comparisons': {'badt': {'sym_kl': {'mean_diff': -0.15, 'ci_low': -0.2, 'ci_high': -0.1,
                                                      'wins': 2, 'n': 2}}},
                  'test_auc_vs_original': {'mean_diff': -0.005, 'ci_low': -0.02, 'ci_high': 0.01}}}


def test_table_gives_mean_and_spread_over_seeds_in_report_order():
  lines = headline.table(_results()).splitlines()
  assert lines[0].startswith('| model | seeds | forget symKL to retrain |')
  names = [line.split('|')[1].strip() for line in lines[2:]]
  assert names == ['original', 'retrain (the reference)', 'E2URec', 'Bad-T', 'noise floor (two retrains)']
  e2urec = [c.strip() for c in lines[4].split('|')[1:-1]]
  assert e2urec == ['E2URec', '2', '0.1500 ± 0.0707', '0.71', '0.805 ± 0.007', '0.30']
  assert '0.0500 ± 0.0141' in lines[6]


def test_criteria_say_which_hold_with_their_numbers():
  met = {name: ok for name, ok, _ in headline.criteria(_results())}
  assert met == {'original >= 3x the noise floor': True, 'E2URec closer than badt, interval excluding 0': True,
                 'test AUC within 0.01 of the original': True, 'gap closed >= 0.5': True,
                 'whole cost under a third of retraining': True}
  r = _results()
  r['summary']['time_ratio']['e2urec'] = 0.34
  r['noise_floor']['sym_kl'] = 0.2  # 0.4 / 0.2 = 2x
  lines = headline.criteria_lines(r)
  assert '- whole cost under a third of retraining: NOT met (0.34)' in lines
  assert '- original >= 3x the noise floor: NOT met (2.0x (0.4 / 0.2))' in lines


def test_table_command_prints_it_and_refuses_a_workdir_without_results(tmp_path):
  (tmp_path / 'results.json').write_text(json.dumps(_results()))
  out = subprocess.run([sys.executable, '-m', 'e2urec_jax', 'table', f'--workdir={tmp_path}'], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith(headline.table(_results()))
  empty = tmp_path / 'empty'
  empty.mkdir()
  out = subprocess.run([sys.executable, '-m', 'e2urec_jax', 'table', f'--workdir={empty}'], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
  assert out.returncode == 1 and out.stderr.count('\n') == 1 and 'results.json' in out.stderr


def _shifted(results: dict, offset: int) -> dict:
  """The same run's rows under seeds + offset (a second run of other seeds)."""
  r = json.loads(json.dumps(results))
  for entry in list(r['methods'].values()) + [r['noise_floor']]:
    for row in entry['seeds']:
      row['seed'] += offset
  return r


def test_pooling_two_runs_gives_every_seed_once_and_the_pooled_statistics():
  a, b = _results(), _shifted(_results(), 10)
  b['methods']['e2urec']['seeds'][0]['forget']['sym_kl'] = 0.40  # seed 11: E2URec further than Bad-T (0.25)
  pooled = headline.pool({'A': a, 'B': b})
  assert pooled['seeds'] == [1, 2, 11, 12]
  e2urec = [c.strip() for c in headline.table(pooled).splitlines()[4].split('|')[1:-1]]
  assert e2urec[:3] == ['E2URec', '4', '0.2250 ± 0.1258']  # 0.10, 0.20, 0.40, 0.20: sample std
  badt = pooled['summary']['comparisons']['badt']['sym_kl']
  assert badt['n'] == 4 and badt['wins'] == 3 and abs(badt['mean_diff'] - (-0.075)) < 1e-9
  assert '- E2URec - badt: -0.0750' in headline.comparison_lines(pooled)
  assert abs(pooled['noise_floor']['sym_kl'] - 0.05) < 1e-9 and len(pooled['noise_floor']['seeds']) == 4


def test_pooling_one_recorded_run_reproduces_its_table_and_refuses_a_seed_twice():
  recorded = json.load(open(f'{REPO}/docs/results/pretrained-synthetic/results.json'))
  pooled = headline.pool({'run': recorded})
  assert headline.table(pooled) == headline.table(recorded)
  assert headline.criteria_lines(pooled) == headline.criteria_lines(recorded)
  with pytest.raises(UserError, match='seed 1 is in both A and B'):
    headline.pool({'A': _results(), 'B': _results()})


def test_table_command_pools_runs_given_as_a_list(tmp_path):
  for name, r in (('a', _results()), ('b', _shifted(_results(), 10))):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'results.json').write_text(json.dumps(r))
  out = subprocess.run([sys.executable, '-m', 'e2urec_jax', 'table', f'--workdir={tmp_path / "a"},{tmp_path / "b"}'],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines()[0].startswith('4 seeds pooled from 2 runs')
  assert '| E2URec | 4 | 0.1500 ± 0.0577 |' in out.stdout

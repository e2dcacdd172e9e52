"""The oracle teacher (methods/oracle.py): E2URec's student, section and seeds, distilled on the
forget set towards the retrained model. On a tiny run it ends closer to retrain on the forget set
than the original, records that its section is E2URec's, and E2URec's mechanism reports it."""
import os

import pytest

from conftest import CACHE, load_config


def test_oracle_is_a_same_as_diagnostic_kept_out_of_the_default():
  from e2urec_jax import config as config_lib
  from e2urec_jax.methods import runner, spec
  oracle = spec.get('oracle')
  assert oracle.same_as == 'e2urec' and not oracle.chainable and not oracle.in_default
  assert spec.names()[-1] == 'oracle' and 'oracle' not in spec.default_methods()
  config = config_lib.default_config()
  config.unlearn.e2urec.w = 0.3
  assert runner.section_of(config, 'oracle', (('steps', 7),)).to_dict() == {**config.unlearn.e2urec.to_dict(),
                                                                           'steps': 7}
  fields = runner.method_fields(config, 'oracle', runner.section_of(config, 'oracle'), None)
  assert fields['unlearn.e2urec.w'] == 0.3 and not any(k.startswith('augment.') for k in fields)


@pytest.mark.slow
def test_the_oracle_ends_closer_to_retrain_than_the_original(tmp_path):
  from e2urec_jax import runtime
  from e2urec_jax.experiment import run_experiment
  config = load_config('configs/demo.py:test')
  config.jax_cache_dir, config.progress = CACHE, False
  config.seeds = '42'
  config.data.num_samples = 600
  config.train.max_steps = 40
  config.augment.steps = 3
  config.unlearn.methods = 'e2urec,oracle'
  config.unlearn.e2urec.steps = 20
  config.eval.trajectory_every = 0
  run_experiment(config, str(tmp_path))
  results = runtime.read_json(os.path.join(tmp_path, 'results.json'))
  methods = results['methods']
  assert list(methods) == ['original', 'retrain', 'e2urec', 'oracle']
  oracle = methods['oracle']
  assert oracle['forget']['sym_kl'] < methods['original']['forget']['sym_kl']
  assert oracle['phase']['section'] == 'unlearn.e2urec' and oracle['phase']['steps'] == 20
  assert 'retrain_time_s' in oracle['phase'] and 'frozen_inputs_time_s' in oracle['phase']
  assert 'mechanism' not in oracle
  assert methods['e2urec']['mechanism']['oracle']['sym_kl'] == pytest.approx(oracle['forget']['sym_kl'], rel=1e-6)
  assert '| oracle |' in open(os.path.join(tmp_path, 'results.md')).read()

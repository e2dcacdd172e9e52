"""Retrain-free stopping (config.unlearn.auto): its fields and fingerprint. That the published
model is the one the rule chose is checked on the demo run (test_experiment.py)."""
import pytest

from conftest import load_config


def test_auto_fields_are_checked_and_enter_the_stepped_methods_fingerprints_only():
  from e2urec_jax import config as config_lib
  from e2urec_jax.errors import UserError
  from e2urec_jax.train import fingerprint
  config = load_config('configs/demo.py')
  config.unlearn.auto = 'mia'
  with pytest.raises(UserError, match='unlearn.auto'):
    config_lib.validate(config)
  config.unlearn.auto = 'heldout_mia'
  config_lib.validate(config)
  off = load_config('configs/demo.py')

  def fields(c, method, stepped):
    return fingerprint.fields(c, fingerprint.METHOD, method=method, stepped=stepped)
  assert fields(config, 'neggrad', True)['unlearn.auto'] == 'heldout_mia'
  assert fields(config, 'neggrad', True) != fields(off, 'neggrad', True)  # a rerun cannot reuse the other model
  assert fields(config, 'sisa', False) == fields(off, 'sisa', False)  # the sharded retrains do not read it
  off.unlearn.max_grad_norm = 0.5  # the settings every method shares are read by every method
  assert fields(off, 'sisa', False) != fields(load_config('configs/demo.py'), 'sisa', False)

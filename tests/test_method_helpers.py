"""A method declares its helper models (spec.Helper): a test-only LoRA method with a helper
model of its own trained on the forget set is planned, hidden from the report and deleted by a
forget request, with no edit outside this module (resume, forget, evaluate read the specs).

The method: E2URec's loss and pieces, its teacher trained by a copy of E2URec's augmented
recipe under another name (a model trained on the forget set, as E2URec's augmented model is).
"""
import dataclasses
import os
import types

import pytest

from conftest import load_config
from e2urec_jax.methods import e2urec, spec

NAME = 'toy_helped'
HELPER = 'toy_teacher'


def ensure_toy_teacher(ctx, callbacks=()):
  return e2urec.ensure_augmented(ctx, callbacks)  # (a test of the declarations: never trained here)


TOY = dataclasses.replace(
    e2urec.SPEC, name=NAME, summary='E2URec with a teacher of its own (a test-only method)', diagnostic=None,
    featured=False,
    helpers=(spec.Helper(HELPER, 'augmented', ('original',), ensure_toy_teacher, trained_on_forget=True),))


@pytest.fixture
def registered():
  spec.register(TOY)
  yield TOY
  spec.unregister(NAME)


def test_plan_puts_the_helper_before_the_method_that_reads_it(registered):
  from e2urec_jax import resume
  config = load_config('configs/demo.py')
  config.unlearn.methods = f'neggrad,{NAME}'
  phases = resume.plan(config, 'run')
  names = [p.name for p in phases]
  assert names.count(HELPER) == 1 and names.index(HELPER) < names.index(NAME)
  helper = phases[names.index(HELPER)]
  assert helper.kind == 'augmented' and helper.deps == ('original',)
  assert phases[names.index(NAME)].deps == ('original', HELPER)
  assert 'augmented' not in names  # E2URec is not run: its helper is not planned
  config.unlearn.methods = f'e2urec,{NAME}'
  names = [p.name for p in resume.plan(config, 'run')]
  assert names.index('augmented') < names.index('e2urec') and names.index(HELPER) < names.index(NAME)
  # The retrained model a method reads (the oracle's helper) is planned once, as run's own.
  config.unlearn.methods = 'e2urec,oracle'
  names = [p.name for p in resume.plan(config, 'run')]
  assert names.count('retrain') == 1 and names.index('retrain') < names.index('oracle')
  config.unlearn.method = 'oracle'
  names = [p.name for p in resume.plan(config, 'unlearn')]
  assert names.index('retrain') < names.index('oracle')


def test_a_forget_request_deletes_the_helper_trained_on_the_forget_set(registered):
  from e2urec_jax import forget, forget_audit
  # The request's own helpers, and the experiment's helpers trained on its forget set when the
  # request's records were in it (whichever method serves the request).
  assert forget.helper_deletions(NAME, 3, False) == [f'phases/forget_v3/{HELPER}']
  found = forget.helper_deletions('e2urec', 3, True)
  assert found[0] == 'phases/forget_v3/augmented'
  assert {f'models/{HELPER}', f'phases/{HELPER}', 'models/augmented', 'phases/augmented'} <= set(found)
  assert 'models/retrain' not in found  # the oracle's helper was not trained on the forget set
  assert HELPER in forget_audit.deleted_helpers() and 'retrain' not in forget_audit.deleted_helpers()


def test_the_report_hides_the_helper(registered, tmp_path):
  from e2urec_jax.eval import evaluate
  from e2urec_jax.train import artifacts
  for name in ('original', 'retrain', 'retrain_seed2', 'augmented', HELPER, NAME):
    os.makedirs(tmp_path / 'models' / name)
    artifacts.write_done(str(tmp_path / 'phases' / name), {'time_s': 1.0})
  ctx = types.SimpleNamespace(workdir=str(tmp_path), phase_dir=lambda n: str(tmp_path / 'phases' / n))
  assert evaluate.available_models(ctx) == sorted(['original', 'retrain', NAME])


def test_without_the_toy_its_helper_is_unknown():
  from e2urec_jax import forget, forget_audit
  assert HELPER not in spec.hidden_models() and HELPER not in forget_audit.deleted_helpers()
  assert forget.helper_deletions('e2urec', 2, True) == ['phases/forget_v2/augmented', 'models/augmented',
                                                       'phases/augmented']

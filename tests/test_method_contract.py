"""Adding a method touches its own module only: a test-only method, declared and registered here,
gets its config section, its rules, a report row, `forget`'s support, a run and a benchmark row,
with no edit to config.py, the registry, the report, forget.py or bench.py.

The method: NegGrad with its forget-set ascent scaled by a factor of its own.
"""
import os

import pytest

from conftest import CACHE, load_config
from e2urec_jax import rules
from e2urec_jax.errors import UserError
from e2urec_jax.methods import full_param, spec

NAME = 'scaled_neggrad'


def scaled_neggrad_loss_fn(model):
  from e2urec_jax import losses

  def loss_fn(params, frozen, batch, rng, hp):
    _, ce_r, ce_f = full_param.retain_forget_ce(model, params, batch, rng)
    return losses.neggrad_loss(ce_r, ce_f, hp['weight'] * hp['scale']), {'retain_ce': ce_r, 'forget_ce': ce_f}
  return loss_fn


FROZEN_BUILD_S = 0.25  # what building its (empty) frozen inputs is declared to have cost


def nothing_frozen(ctx, section, original) -> spec.FrozenInputs:
  return spec.FrozenInputs({}, build_s=FROZEN_BUILD_S)


# What `bench` times of it (the step of a run, at random weights): forward + backward of 2 x batch samples.
SCALED_NEGGRAD_BENCH = spec.BenchStep(loss=scaled_neggrad_loss_fn, frozen=lambda base, adapters, zero: {},
                                      hparams={'weight': 0.2, 'scale': 2.0}, forward_passes=3 * 2)

SCALED_NEGGRAD = spec.MethodSpec(
    name=NAME,
    summary='NegGrad with a scaled ascent (a test-only method)',
    defaults={
        'learning_rate': 5e-5,  # AdamW rate.
        'steps': 3,  # Steps in all.
        'batch_size': 8,  # Retain and forget samples per step, each.
        'weight': 0.2,  # NegGrad's weight of the forget-set ascent ...
        'scale': 2.0,  # ... times this.
    },
    rules={'weight': rules.FINITE, 'scale': rules.POSITIVE}, trainable='full', loss=scaled_neggrad_loss_fn,
    batches=full_param.paired_batches, hparams=full_param.constant_hparams('weight', 'scale'), frozen=nothing_frozen,
    bench=SCALED_NEGGRAD_BENCH)


@pytest.fixture
def registered():
  spec.register(SCALED_NEGGRAD)
  yield SCALED_NEGGRAD
  spec.unregister(NAME)


def test_registering_adds_config_section_rules_report_row_and_forget_support(registered):
  from e2urec_jax import config as config_lib
  from e2urec_jax.methods import runner
  config = load_config('configs/demo.py')  # built after registration: it has the new section
  assert config.unlearn[NAME].to_dict() == SCALED_NEGGRAD.defaults
  assert NAME in config_lib.ALL_METHODS and config_lib.default_config().unlearn.methods.endswith(f',{NAME}')
  assert spec.report_order()[-1] == NAME and NAME in spec.chainable()
  config_lib.validate(config)
  config.unlearn[NAME].scale = -1.0
  with pytest.raises(UserError, match=rf"config.unlearn.{NAME}.scale=-1.0: must be a finite number > 0"):
    config_lib.validate(config)
  config.unlearn[NAME].scale = 2.0
  config.unlearn.methods = f'neggrad,{NAME}'
  config.sweep.seeds = '5'
  assert [r.name for r in runner.rows(config)] == ['neggrad', NAME, 'neggrad[seed=5]', f'{NAME}[seed=5]']


def test_unregistered_the_method_is_unknown():
  from e2urec_jax import config as config_lib
  config = load_config('configs/demo.py')
  assert NAME not in config.unlearn and NAME not in spec.names()
  config.unlearn.methods = NAME
  with pytest.raises(UserError, match=rf"config.unlearn.methods='{NAME}': must be"):
    config_lib.validate(config)


def test_a_spec_declares_its_examples_per_step_default():
  """Without its own `examples_per_step`, a step reads a retain and a forget batch (examples/s counts both)."""
  assert SCALED_NEGGRAD.examples_per_step is spec.paired_examples
  section = load_config('configs/demo.py').unlearn.neggrad
  assert SCALED_NEGGRAD.examples_per_step(section) == 2 * section.batch_size


def test_a_spec_must_give_every_field_a_rule():
  import dataclasses
  unchecked = dataclasses.replace(SCALED_NEGGRAD, name='unchecked', defaults={**SCALED_NEGGRAD.defaults, 'temp': 1})
  with pytest.raises(ValueError, match="no rule for config field"):
    spec.register(unchecked)
  assert 'unchecked' not in spec.names()


@pytest.mark.slow
def test_run_executes_and_reports_the_registered_method(registered, tmp_path):
  """`run` trains it like a built-in (one runner: phase, model, stats) and reports it in registration order."""
  from e2urec_jax import runtime
  from e2urec_jax.eval import report
  from e2urec_jax.experiment import run_experiment
  config = load_config('configs/demo.py:test')
  config.jax_cache_dir, config.progress = CACHE, False
  config.data.num_samples = 600
  config.train.max_steps = 4
  config.unlearn.methods = f'{NAME},neggrad'
  config.unlearn.neggrad.steps = 3
  run_experiment(config, str(tmp_path))
  results = runtime.read_json(os.path.join(tmp_path, 'results.json'))
  assert report.validate_results(results, required_methods=('original', 'retrain', 'neggrad', NAME)) == []
  assert list(results['methods']) == ['original', 'retrain', 'neggrad', NAME]  # registration order
  row = results['methods'][NAME]
  assert row['phase']['steps'] == 3 and row['phase']['seed'] == config.seed
  # FrozenInputs.build_s: counted in the method's time, recorded apart ('frozen_inputs' is runner.FROZEN_WORK)
  assert row['phase']['frozen_inputs_time_s'] == FROZEN_BUILD_S and row['time_s'] >= FROZEN_BUILD_S
  assert row['trainable_params'] == results['methods']['neggrad']['trainable_params']
  assert os.path.exists(os.path.join(tmp_path, 'models', NAME, 'model.safetensors'))
  assert f'`{NAME}`' in open(os.path.join(tmp_path, 'results.md')).read()


@pytest.mark.slow
def test_bench_times_the_registered_method_step(registered, tmp_path):
  """`bench` times the step its BenchStep declares, as '<name>_step', and bench.what accepts that name."""
  import sys
  from conftest import REPO
  from e2urec_jax import bench
  from e2urec_jax import config as config_lib
  from e2urec_jax.models import forward_flops, model_from_hf_config
  sys.path.insert(0, REPO)
  from configs import bench as bench_config
  config = bench_config.get_config(f'size=tiny,batch=2,seq=16,steps=1,warmup=0,vocab=256,what={NAME}_step+eval')
  config_lib.validate(config)
  rows = {r['name']: r for r in bench.bench_ours(config)}
  assert list(rows) == [f'{NAME}_step', 'eval']
  row = rows[f'{NAME}_step']
  assert row['examples_per_s'] > 0 and row['batch'] == 2
  model = model_from_hf_config(bench.hf_config('tiny', 256))
  per_sample = forward_flops(model, 16, bench.ANSWER_LEN, head_positions=bench.ANSWER_LEN)
  assert row['flops_per_step'] == 6 * 2 * per_sample == 6 * rows['eval']['flops_per_step']
  config.bench.what = 'nothing_step'
  with pytest.raises(UserError, match=rf"config.bench.what='nothing_step': must be .*'{NAME}_step'"):
    config_lib.validate(config)

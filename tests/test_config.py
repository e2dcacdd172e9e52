"""config.validate: every field has a rule, every shipped config passes, bad values name themselves."""
import pytest

from conftest import load_config
from e2urec_jax import config as config_lib
from e2urec_jax.errors import UserError

SHIPPED = ('configs/demo.py', 'configs/demo.py:test', 'configs/ml100k.py', 'configs/ml100k.py:cpu',
           'configs/ml1m.py', 'configs/goodreads.py', 'configs/bench.py', 'configs/bench.py:size=base,batch=64',
           'configs/bench.py:attention=cudnn,attention_dropout=0,remat=true,remat_policy=dots,scan_unroll=1,'
           'dropout_seeds=key')


def _leaves(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, config_lib.ConfigDict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def test_every_field_has_a_rule():
  """A new field without a rule fails here: add one to config.RULES (or to its method's spec)."""
  rules = config_lib.field_rules()
  for path in ('configs/demo.py', 'configs/bench.py'):
    missing = [p for p in _leaves(load_config(path)) if p not in rules]
    assert not missing, f'{path}: no rule for {missing}'


@pytest.mark.parametrize('path', SHIPPED)
def test_shipped_configs_are_valid(path):
  config_lib.validate(load_config(path))


# field, bad value, what the one-line error must say (the field and value are always checked)
BAD = [
    ('train.mode', 'Full', "one of 'full', 'lora'"),
    ('augment.mode', 'adapter', "one of 'lora', 'full'"),
    ('train.learning_rate', 0.0, '> 0'),
    ('train.learning_rate', float('nan'), 'finite'),
    ('train.batch_size', 0, '>= 1'),
    ('train.batch_size', -4, '>= 1'),
    ('augment.batch_size', -1, '>= 1'),
    ('eval.batch_size', 0, '>= 1'),
    ('unlearn.e2urec.batch_size', -16, '>= 1'),
    ('unlearn.e2urec.learning_rate', 0.0, '> 0'),
    ('unlearn.e2urec.w', 1.5, '<= 1'),
    ('unlearn.neggrad.learning_rate', float('inf'), 'finite'),
    ('unlearn.receraser.aggregate', 'median', "one of 'attention', 'mean'"),
    ('unlearn.method', 'magic', "one of 'e2urec'"),
    ('unlearn.methods', 'e2urec,magic', "one of 'e2urec'"),
    ('data.forget_fraction', 1.5, '< 1'),
    ('data.split', (0.6, 0.2), 'a sequence of 3 items'),
    ('data.bucket_lengths', (0, 128), '>= 1'),
    ('data.source', 'ml-10m', "'ml-100k'"),
    ('model.scratch.family', 'gpt', "one of 't5', 'llama'"),
    ('model.dtype', 'fp16', "'bfloat16'"),
    ('model.attention', 'flash', "one of 'einsum', 'xla', 'cudnn'"),
    ('model.attention_dropout', 1.0, "-1 (the model's dropout rate)"),
    ('model.attention_dropout', -0.5, '>= 0 and < 1'),
    ('model.remat_policy', 'all', "one of 'nothing', 'dots', 'dots_all'"),
    ('model.scan_unroll', -1, '>= 0'),
    ('model.dropout_seeds', 'philox', "one of 'bits', 'key'"),
    ('lora.r', 0, '>= 1'),
    ('lora.dropout', 1.0, '< 1'),
    ('sweep.ablations', 'no_teachers', 'no_forget_teacher'),
    ('sweep.ws', '0.3,x', 'comma-separated list'),
    ('mesh.model_axis', 0, '>= 1'),
    ('checkpoint.every_steps', 0, '>= 1'),
    ('data.protocol', 'original', "one of 'default', 'paper'"),
    ('train.max_grad_norm', -1.0, '>= 0'),
    ('augment.weight_decay', -0.01, '>= 0'),
    ('unlearn.max_grad_norm', float('nan'), 'finite'),
]


def _set(config, path, value):
  *parents, key = path.split('.')
  for p in parents:
    config = config[p]
  config[key] = value


@pytest.mark.parametrize('path,value,wants', BAD, ids=[f'{p}={v!r}' for p, v, _ in BAD])
def test_bad_value_is_a_user_error_naming_field_value_and_choices(path, value, wants):
  config = load_config('configs/demo.py')
  _set(config, path, value)
  with pytest.raises(UserError) as e:
    config_lib.validate(config)
  message = str(e.value)
  assert message.startswith(f'config.{path}={value!r}: must be ') and wants in message, message
  assert '\n' not in message


def test_fields_that_depend_on_each_other():
  config = load_config('configs/demo.py')
  config.data.split = (0.5, 0.2, 0.2)
  with pytest.raises(UserError, match=r'config.data.split=\(0.5, 0.2, 0.2\): the three fractions must sum to 1'):
    config_lib.validate(config)
  config = load_config('configs/demo.py')
  config.model.scratch.family, config.model.scratch.num_kv_heads = 'llama', 3
  with pytest.raises(UserError, match='num_heads of num_kv_heads=3'):
    config_lib.validate(config)


def test_data_rules_follow_the_readers_and_the_generator():
  from e2urec_jax.data import movielens, readers, synthetic
  rules = config_lib.RULES
  assert all(rules['data.source'](s) is None for s in readers.SOURCES)
  assert rules['data.source'].wants == 'one of ' + ', '.join(repr(s) for s in readers.SOURCES)
  assert rules['data.synthetic.num_styles'](len(synthetic.STYLE_WORDS)) is None
  assert rules['data.synthetic.num_styles'](len(synthetic.STYLE_WORDS) + 1) is not None
  assert rules['data.synthetic.num_genres'](len(movielens.ML100K_GENRES) - 1) is None
  assert rules['data.synthetic.num_genres'](len(movielens.ML100K_GENRES)) is not None


def test_method_lists_derive_from_the_registered_specs():
  from e2urec_jax.methods import spec
  config = config_lib.default_config()
  assert config_lib.ALL_METHODS == spec.names() == ('e2urec', 'neggrad', 'badt', 'sisa', 'receraser', 'ga', 'npo', 'influence',
                                                       'oracle')
  assert spec.default_methods() == ('e2urec', 'neggrad', 'badt', 'sisa', 'receraser', 'ga', 'npo')  # oracle: a diagnostic
  assert config.unlearn.methods == ','.join(spec.default_methods())
  assert spec.report_order() == ('original', 'retrain') + spec.names()
  assert spec.chainable() == ('e2urec', 'neggrad', 'badt', 'ga', 'npo', 'influence')
  for s in spec.specs():
    assert config.unlearn[s.name].to_dict() == s.defaults


def test_saved_config_round_trip(tmp_path):
  from e2urec_jax import runtime
  config = load_config('configs/demo.py')
  runtime.save_config(str(tmp_path), config)
  assert config_lib.load_saved(str(tmp_path)).to_dict() == config.to_dict()
  assert config_lib.load_saved(str(tmp_path / 'nothing')) is None


@pytest.mark.parametrize('path', ['configs/ml1m.py', 'configs/ml100k.py', 'configs/goodreads.py'])
def test_paper_configs_are_the_original_codes_experiment(path):
  """The paper's configs run the original code's experiment: its protocol and prompt, a full
  augmented model, batch 32, AdamW weight decay 0.01, early stopping after 3 epochs without a
  better valid loss, no gradient clipping (justarter/E2URec: normal_train.py, finetune_aug.py)."""
  c = load_config(path).to_dict()
  assert c['data']['protocol'] == 'paper'
  assert c['augment']['mode'] == 'full'
  assert c['train']['batch_size'] == 32
  assert c['train']['weight_decay'] == c['augment']['weight_decay'] == c['unlearn']['weight_decay'] == 0.01
  assert c['train']['max_grad_norm'] == c['augment']['max_grad_norm'] == c['unlearn']['max_grad_norm'] == 0.0
  assert c['train']['epochs'] == 100 and c['train']['eval_every'] == 0
  assert c['train']['patience'] == 2  # stops at the 3rd check in a row without improvement (endure_times 3)
  assert c['train']['mode'] == 'full' and c['model']['name_or_path'] == 't5-base'
  assert c['unlearn']['e2urec']['batch_size'] == 16 and c['augment']['batch_size'] == 16


def test_defaults_and_the_demo_keep_this_projects_setting():
  """default_config() (and so the demo) is unchanged by the paper's switches."""
  for c in (config_lib.default_config(), load_config('configs/demo.py'), load_config('configs/ml100k.py:cpu')):
    assert c.data.protocol == 'default'
    assert c.train.max_grad_norm == c.augment.max_grad_norm == c.unlearn.max_grad_norm == 1.0
    assert c.train.weight_decay == c.augment.weight_decay == c.unlearn.weight_decay == 0.0
  assert config_lib.default_config().augment.mode == 'lora'

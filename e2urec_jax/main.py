"""Command line: python -m e2urec_jax <command> --config=configs/x.py[:arg] --workdir=DIR.

The commands live in their own modules; this file only parses flags and dispatches.
"""
import importlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from e2urec_jax.errors import UserError

# command -> (module, function, one-line help). Each function takes (config, workdir).
COMMANDS = {
    'prepare': ('e2urec_jax.data.prepare', 'prepare', 'raw files -> splits, prompts, tokens'),
    'train': ('e2urec_jax.methods.original', 'train_original', 'train the original LLMRec'),
    'retrain': ('e2urec_jax.methods.retrain', 'retrain', 'train from scratch on the retain split'),
    'augment': ('e2urec_jax.methods.e2urec', 'train_augmented', 'fine-tune the original on the forget set'),
    'unlearn': ('e2urec_jax.methods.registry', 'unlearn_command', 'run config.unlearn.method'),
    'evaluate': ('e2urec_jax.eval.evaluate', 'evaluate_command', 'score every model in the workdir'),
    'predict': ('e2urec_jax.eval.predict', 'predict_command', 'score (user, item) pairs from a CSV'),
    'export': ('e2urec_jax.eval.export', 'export_command', 'write a merged Hugging Face folder'),
    'run': ('e2urec_jax.experiment', 'run_experiment', 'the whole experiment, resuming finished phases'),
    'bench': ('e2urec_jax.bench', 'bench_command', 'time the steps; compare with PyTorch'),
    'forget': ('e2urec_jax.forget', 'forget_command', 'serve a forget request on a trained run'),
}

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file: configs/<name>.py[:arg].', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: data, checkpoints, results.')
flags.DEFINE_string('users', None, 'forget: user ids (comma-separated) or a file of ids, one a line.')
flags.DEFINE_string('interactions', None, 'forget: CSV of user_id,item_id pairs to forget.')
flags.DEFINE_string('input', None, 'predict: CSV with user_id,item_id columns.')
flags.DEFINE_string('output', None, 'predict/export: where to write.')
flags.DEFINE_string('model', None, 'evaluate/predict/export: model name in the workdir (original, e2urec, ...).')


def _usage() -> str:
  lines = [f'  {name:9s} {desc}' for name, (_, _, desc) in COMMANDS.items()]
  return 'usage: python -m e2urec_jax <command> --config=configs/x.py --workdir=DIR\n' + '\n'.join(lines)


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag or config key, wrong type: one line, exit 2
    msg = str(e).strip().splitlines()
    print(f'error: {msg[-1] if msg else e}', file=sys.stderr)
    sys.exit(2)
  except (KeyError, AttributeError, ValueError, TypeError) as e:
    print(f'error: bad config override: {e}', file=sys.stderr)
    sys.exit(2)


def _default_config_path() -> str:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.join(here, 'configs', 'demo.py')


def main(argv):
  if len(argv) < 2 or argv[1] in ('-h', 'help'):
    print(_usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS:
    print(f'error: unknown command {command!r}; one of: {", ".join(COMMANDS)}', file=sys.stderr)
    sys.exit(2)
  if len(argv) > 2:
    print(f'error: unexpected arguments {argv[2:]}; options go as --flag=value', file=sys.stderr)
    sys.exit(2)
  workdir = os.path.expanduser(_WORKDIR.value or '')  # '--workdir=~/x' reaches us unexpanded
  if workdir.startswith('gs://'):
    print('error: --workdir must be a local folder; on a TPU VM mirror it to a bucket with tpu/sync.sh '
          '(or launch.sh SYNC_TO=gs://...)', file=sys.stderr)
    sys.exit(2)
  if not workdir:
    print('error: --workdir is required (the run directory)', file=sys.stderr)
    sys.exit(2)
  module, fn_name, _ = COMMANDS[command]
  from e2urec_jax import runtime
  try:
    config = _CONFIG.value
    if config is None:  # later commands (forget, evaluate, ...) default to the run's saved config
      config = _load_workdir_config(workdir)
    runtime.setup(config)
    fn = getattr(importlib.import_module(module), fn_name)
    fn(config, workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print('interrupted: the last checkpoint is kept; rerun the same command to resume', file=sys.stderr)
    sys.exit(130)


def _load_workdir_config(workdir):
  """A run's saved config (written by prepare), else the embedded demo default."""
  from e2urec_jax import runtime
  saved = runtime.load_saved_config(workdir)
  if saved is not None:
    return saved
  import importlib.util
  spec = importlib.util.spec_from_file_location('demo_config', _default_config_path())
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def run_cli():
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=_parse)


if __name__ == '__main__':
  run_cli()

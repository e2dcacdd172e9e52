"""Command line: python -m e2urec_jax <command> --config=configs/x.py[:arg] --workdir=DIR.

This file only parses flags, validates the config (config.validate: before any work, so a bad
value fails in seconds and leaves the workdir untouched) and calls the command (commands.py)
with the flags it takes as keyword arguments. It is the only module that reads `flags.FLAGS`.
"""
import functools
import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from e2urec_jax import interrupts
from e2urec_jax.errors import UserError

# command -> (function in commands.py, one-line help, {flag: keyword argument}).
_RESTART = {'restart': 'restart'}
COMMANDS = {
    'prepare': ('prepare', 'raw files -> splits, prompts, tokens', _RESTART),
    'train': ('train', 'train the original LLMRec', _RESTART),
    'retrain': ('retrain', 'train from scratch on the retain split', _RESTART),
    'augment': ('augment', 'fine-tune the original on the forget set', _RESTART),
    'unlearn': ('unlearn', 'run config.unlearn.method', _RESTART),
    'evaluate': ('evaluate', 'score every model in the workdir', {'model': 'model'}),
    'predict': ('predict', 'score (user, item) pairs from a CSV', {'input': 'input', 'output': 'output',
                                                                   'model': 'model', 'forget_key': 'forget_key',
                                                                   'allow_forgotten': 'allow_forgotten'}),
    'export': ('export', 'write a merged Hugging Face (or a PEFT) folder', {'output': 'output', 'model': 'model',
                                                                           'format': 'fmt'}),
    'run': ('run', 'the whole experiment, resuming finished phases', _RESTART),
    'sequence': ('sequence', 'deletion requests one after another vs retraining', {}),
    'bench': ('bench', 'time the steps; compare with PyTorch', {}),
    'forget': ('forget', 'serve a forget request on a trained run', {'users': 'users',
                                                                     'interactions': 'interactions',
                                                                     'categories': 'categories',
                                                                     'forget_key': 'forget_key'}),
    'audit': ('audit', 'check forget audits with the key', {'users': 'users', 'interactions': 'interactions',
                                                            'forget_key': 'forget_key'}),
    'table': ('table', "print a run's headline table and criteria from <workdir>/results.json", {}),
}
TRAINS = ('train', 'retrain', 'augment', 'unlearn', 'run', 'sequence', 'forget')  # commands that take callbacks
COMMAND_FLAGS = ('users', 'interactions', 'categories', 'input', 'output', 'model', 'format', 'restart', 'forget_key',
                 'allow_forgotten')
FORGET_KEY_ENV = 'E2UREC_FORGET_KEY'  # the key file's path when --forget_key is not given

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file: configs/<name>.py[:arg].', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: data, checkpoints, results.')
flags.DEFINE_string('users', None, 'forget: user ids (comma-separated) or a file of ids, one a line.')
flags.DEFINE_string('interactions', None, 'forget: CSV of user_id,item_id pairs to forget.')
flags.DEFINE_string('categories', None, "forget: a user's ratings of one item category, USER:CATEGORY "
                    '(comma-separated), or a CSV of user_id,category lines.')
flags.DEFINE_string('input', None, 'predict: CSV with user_id,item_id columns.')
flags.DEFINE_string('output', None, 'predict/export: where to write.')
flags.DEFINE_string('format', None, 'export: merged (default; adapters folded into the weights) or peft '
                    '(a Hugging Face PEFT adapter folder, its base model in <output>/base).')
flags.DEFINE_string('model', None, 'evaluate/predict/export: model name in the workdir (original, e2urec, ...).')
flags.DEFINE_string('restart', None, 'run/train/...: train phases again whose config changed (changed), '
                    'all of the command (all), or the named ones (PHASE,...), with the phases built on them.')
flags.DEFINE_string('forget_key', None, f'forget/predict/audit: the key file (outside the workdir; default '
                    f'${FORGET_KEY_ENV}) under which audits hold keyed hashes of forgotten ids.')
flags.DEFINE_bool('allow_forgotten', False, 'predict: score users (and interactions) that forget requests removed.')


def _usage() -> str:
  lines = [f'  {name:9s} {desc}' for name, (_, desc, _) in COMMANDS.items()]
  return 'usage: python -m e2urec_jax <command> --config=configs/x.py --workdir=DIR\n' + '\n'.join(lines)


def _parse(argv):
  argv = [_underscored(a) for a in argv]  # --allow-forgotten is --allow_forgotten
  _check_config_file(argv)
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag or config key, wrong type: one line, exit 2
    msg = str(e).strip().splitlines()
    _fail(_override_without_config(argv) or (msg[-1] if msg else str(e)))
  except (KeyError, AttributeError, ValueError, TypeError) as e:
    _fail(f'bad config override: {e}')
  except SyntaxError as e:  # in the --config file
    _fail(f'--config={_config_arg(argv)}: line {e.lineno}: {e.msg}; fix the config file')
  try:
    _CONFIG.value  # a config file that failed to load (an IOError inside it) raises on first use
    if _CONFIG.value is not None:
      _CONFIG.value.keys()
  except OSError as e:
    _fail(f'--config={_config_arg(argv)}: cannot load it ({str(e).splitlines()[0]}); pass a config file such '
          'as configs/demo.py')
  return rest


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_arg(argv) -> str | None:
  """The value of --config (`--config=FILE[:arg]` or `--config FILE[:arg]`), or None."""
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a[len('--config='):]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _check_config_file(argv) -> None:
  """--config names a file that exists (config_flags would defer the error to two tracebacks)."""
  given = _config_arg(argv)
  if given is None:
    return
  path = given.split(':', 1)[0]
  if not os.path.isfile(path):
    what = 'is a folder' if os.path.isdir(path) else 'no such file'
    _fail(f'--config={given}: {what} ({os.path.abspath(path)}); pass a config file such as configs/demo.py '
          '(relative to the current folder)')


def _override_without_config(argv) -> str | None:
  """The refusal of --config.KEY=VALUE given without (or before) --config=FILE, which it overrides."""
  overrides = [a for a in argv if a.startswith('--config.')]
  if not overrides:
    return None
  first = overrides[0]
  config = _config_arg(argv)
  if config is None:
    return (f'{first} overrides a field of a config file, but no --config=FILE is given; pass one before it '
            '(e.g. --config=configs/demo.py). Without --config a command reads the workdir\'s config.json, '
            'which takes no --config.* overrides')
  if argv.index(first) < next(i for i, a in enumerate(argv) if a == '--config' or a.startswith('--config=')):
    return f'{first} comes before --config={config}: put --config=FILE first, then the --config.* overrides'
  return None


def _underscored(arg: str) -> str:
  name, eq, value = arg.partition('=')
  if name.startswith('--') and not name.startswith('--config') and name[2:].replace('-', '_') in COMMAND_FLAGS:
    return '--' + name[2:].replace('-', '_') + eq + value
  if name.startswith('--no') and name[4:].replace('-', '_') in COMMAND_FLAGS:
    return '--no' + name[4:].replace('-', '_') + eq + value
  return arg


def _default_config_path() -> str:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.join(here, 'configs', 'demo.py')


def _check_seed_flags(config, args) -> None:
  """--config.seed=S on a config that lists several seeds would be silently replaced by the first
  of them (configs/demo.py runs 42, 43, 44): refuse it, naming the flag that does what was meant."""
  from e2urec_jax import config as config_lib  # heavy: not on --help (it loads every method)
  given = any(a.startswith('--config.seed=') for a in args)
  seeds = config_lib.experiment_seeds(config)
  if given and not any(a.startswith('--config.seeds=') for a in args) and len(seeds) > 1:
    raise UserError(f'--config.seed={config.seed}: this config runs the seeds config.seeds={config.seeds!r}, '
                    f'which decide; pass --config.seeds={config.seed} for that seed alone '
                    f'(or --config.seeds=... for several)')


def main(argv, callbacks=()):
  """Runs one command. `callbacks` (train/callbacks.py) reach every training phase (tests pass fault hooks)."""
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
  fn_name, _, takes = COMMANDS[command]
  _say_on_interrupt(command)
  stray = [f'--{f}' for f in COMMAND_FLAGS if f not in takes and flags.FLAGS[f].present]
  if stray:
    print(f'error: {", ".join(stray)} is not an option of {command}', file=sys.stderr)
    sys.exit(2)
  workdir = os.path.expanduser(_WORKDIR.value or '')  # '--workdir=~/x' reaches us unexpanded (gs://... too)
  if not workdir:
    print('error: --workdir is required (the run directory)', file=sys.stderr)
    sys.exit(2)
  kwargs = {arg: flags.FLAGS[flag].value for flag, arg in takes.items()}
  if 'forget_key' in kwargs and not kwargs['forget_key']:
    kwargs['forget_key'] = os.environ.get(FORGET_KEY_ENV) or None
  if command in TRAINS:
    kwargs['callbacks'] = tuple(callbacks)
  try:
    from e2urec_jax import config as config_lib  # heavy: not on --help (it loads every method)
    config = _CONFIG.value
    if config is None:  # later commands (forget, evaluate, ...) default to the run's saved config
      config = _load_workdir_config(workdir)
    config_lib.validate(config)  # before any work: nothing below runs on a config that cannot work
    _check_seed_flags(config, sys.argv[1:])
    config.seed = config_lib.experiment_seeds(config)[0]  # the first of config.seeds is the run's seed
    from e2urec_jax import commands, runtime  # heavy: JAX and numpy, not on --help
    runtime.setup(jax_cache_dir=config.jax_cache_dir, model_axis=config.mesh.model_axis,
                  preallocate_gpu=command != 'bench')
    getattr(commands, fn_name)(config, workdir, **kwargs)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    _interrupted()


def _say_on_interrupt(command: str) -> None:
  """What an interrupt of `command` prints: what is true of the workdir then (interrupts.MESSAGES)."""
  text = interrupts.MESSAGES.get(command, interrupts.MESSAGE)
  if command == 'evaluate':  # once its report is decided (eval/report_files.py) the new one is what stays
    from e2urec_jax.eval import report_files  # heavy: numpy, for evaluate only (--help stays light)
    before = report_files.decided()
    interrupts.set_message(lambda: interrupts.EVALUATE_PUBLISHED if report_files.decided() > before else text)
  else:
    interrupts.set_message(text)


def _interrupted():
  """Ctrl-C or SIGTERM (interrupts.py): the message, and 130 (143 for SIGTERM)."""
  interrupts.exit_now()


def _load_workdir_config(workdir):
  """A run's saved config (written by prepare), else the embedded demo default."""
  from e2urec_jax import config as config_lib  # heavy: not on --help (it loads every method)
  saved = config_lib.load_saved(workdir)
  if saved is not None:
    return saved
  spec = importlib.util.spec_from_file_location('demo_config', _default_config_path())
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


# Library noise the command line silences (a variable the user set wins): transformers' advice
# "PyTorch was not found..." (irrelevant to a JAX run) and its warnings below errors, and the
# datasets library's below errors. Progress bars stay; errors still print.
QUIET_ENV = {'TRANSFORMERS_NO_ADVISORY_WARNINGS': '1', 'TRANSFORMERS_VERBOSITY': 'error',
             'DATASETS_VERBOSITY': 'error'}


def run_cli(callbacks=()):
  interrupts.install()  # (again: python -m e2urec_jax installs it before importing this module)
  for key, value in QUIET_ENV.items():  # before anything imports transformers or datasets
    os.environ.setdefault(key, value)
  if hasattr(sys.stdout, 'reconfigure'):  # our lines reach a log in order with the bars on stderr
    sys.stdout.reconfigure(line_buffering=True)
  logging.set_verbosity(logging.WARNING)
  try:
    app.run(functools.partial(main, callbacks=callbacks), flags_parser=_parse)
  except KeyboardInterrupt:  # during flag parsing or start-up
    _interrupted()


if __name__ == '__main__':
  run_cli()

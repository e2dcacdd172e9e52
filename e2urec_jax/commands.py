"""The commands, as functions of explicit arguments: `main` turns flags into these keyword arguments.

Each takes a validated config (config.validate) and the workdir; commands that train also take
`callbacks` (train/callbacks.py), which every training phase they run sees, and `restart`
(--restart: 'changed', 'all' or phase names; resume.py). Commands that write hold the
workdir's lock (workdir_lock.py); evaluate, predict and export never create or prepare a
workdir (they refuse one that has no trained run).
"""
import os

from e2urec_jax import distributed, local_files, runtime, storage, workdir_lock
from e2urec_jax.config import experiment_seeds
from e2urec_jax.errors import UserError
from e2urec_jax.eval import report_files
from e2urec_jax.forget_request import read_request
from e2urec_jax.methods import llmrec, spec
from e2urec_jax.train.paths import run_paths


def _open(config, workdir):
  """The run context of an existing run, read-only: nothing is created, prepared or built."""
  from e2urec_jax.train import context  # heavy: flax, optax (only the commands that read models)
  return context.open_run(config, run_paths(workdir), read_only=True)


def _existing(workdir: str, command: str) -> str:
  """`workdir`, which must hold a prepared run (read-only commands create nothing)."""
  if not storage.isdir(workdir):
    raise UserError(f'no workdir {workdir}: {command} reads a trained run and creates nothing; check --workdir')
  if not storage.exists(os.path.join(workdir, 'data', 'manifest.json')):
    raise UserError(f'{workdir} holds no prepared run (no data/manifest.json): {command} reads a trained run; '
                    'run `run` on it first, or check --workdir')
  return workdir


def _writable(workdir: str) -> str:
  path = storage.abspath(workdir)
  _refuse_foreign_folder(path)
  return runtime.ensure_writable_dir(path)


def _refuse_foreign_folder(workdir: str) -> None:
  """A run replaces whole folders of its workdir (data/ atomically, models/..., tokenizer/), so it writes
  only into a new or empty folder, or one that already holds a run (its config.json or data/manifest.json,
  the first files a run publishes); hidden entries (the lock, temp folders) do not count."""
  if not storage.isdir(workdir):
    return
  if storage.exists(os.path.join(workdir, 'config.json')) or \
      storage.exists(os.path.join(workdir, 'data', 'manifest.json')):
    return
  theirs = sorted(n for n in storage.listdir(workdir) if not n.startswith('.'))
  if theirs:
    more = f' (and {len(theirs) - 1} more)' if len(theirs) > 1 else ''
    raise UserError(f'--workdir={workdir} holds {theirs[0]!r}{more} but no run of this tool (no config.json, no '
                    'data/manifest.json); a run writes data/, models/ and other folders there, replacing any of '
                    'those names: pass a new or empty directory')


def _trained(config, workdir, command, restart):
  """The run context after the data and fingerprint checks (resume.prepare_run), on the pretrained
  backbone when config.pretrain asks for one (backbone.resolve: pretrained now or found cached)."""
  from e2urec_jax import backbone, resume  # heavy: flax, optax, orbax, pandas (the training commands)
  backbone.resolve(config)
  return resume.prepare_run(config, workdir, command, restart)


def prepare(config, workdir: str, *, restart: str | None = None) -> None:
  """raw files -> splits, prompts, tokens under <workdir>/data."""
  from e2urec_jax import backbone, resume  # heavy: flax, optax, orbax, pandas (the training commands)
  with workdir_lock.hold(_writable(workdir), 'prepare'):
    backbone.resolve(config)  # the tokenizer is the backbone's (config.pretrain)
    resume.ensure_data(config, storage.abspath(workdir), resume.parse_restart(restart), say_reused=True)
    if distributed.is_primary():
      runtime.save_config(workdir, config)


def train(config, workdir: str, *, callbacks=(), restart: str | None = None) -> None:
  """The original LLMRec (config.train on the whole train split)."""
  with workdir_lock.hold(_writable(workdir), 'train'):
    stats = llmrec.ensure_original(_trained(config, workdir, 'train', restart), callbacks)
  print(f'original: {stats["steps"]} steps in {stats["time_s"]:.1f}s (valid loss {stats["best_valid"]:.4f})')


def retrain(config, workdir: str, *, callbacks=(), restart: str | None = None) -> None:
  """The same recipe on the retain split: the reference every method is measured against."""
  with workdir_lock.hold(_writable(workdir), 'retrain'):
    stats = llmrec.ensure_retrain(_trained(config, workdir, 'retrain', restart), callbacks=callbacks)
  print(f'retrain: {stats["steps"]} steps in {stats["time_s"]:.1f}s (valid loss {stats["best_valid"]:.4f})')


def augment(config, workdir: str, *, callbacks=(), restart: str | None = None) -> None:
  """The helper models the methods declare of the augmented kind (MethodSpec.helpers; E2URec's
  augmented model: the original fine-tuned on the forget set, config.augment)."""
  from e2urec_jax import resume  # heavy: flax, optax, orbax, pandas (the training commands)
  with workdir_lock.hold(_writable(workdir), 'augment'):
    ctx = _trained(config, workdir, 'augment', restart)
    for helper in resume.augment_helpers():
      stats = helper.ensure(ctx, callbacks)
      print(f'{helper.name}: {stats["steps"]} steps in {stats["time_s"]:.1f}s')


def unlearn(config, workdir: str, *, callbacks=(), restart: str | None = None) -> None:
  """config.unlearn.method on the run's forget set."""
  from e2urec_jax.methods import runner  # heavy: flax, optax, orbax (the training commands)
  method = config.unlearn.method
  with workdir_lock.hold(_writable(workdir), 'unlearn'):
    stats = runner.run_method(_trained(config, workdir, 'unlearn', restart), method, callbacks=callbacks)
  print(f'{method}: unlearned in {stats["time_s"]:.1f}s; model in {workdir}/models/{method}')


def run(config, workdir: str, *, callbacks=(), restart: str | None = None) -> None:
  """The whole experiment (experiment.py), resuming finished phases."""
  from e2urec_jax import resume  # heavy: flax, optax, orbax, pandas (the training commands)
  from e2urec_jax.experiment import run_experiment  # heavy: as resume
  with workdir_lock.hold(_writable(workdir), 'run'):
    run_experiment(config, workdir, callbacks=callbacks, restart=resume.parse_restart(restart))


def sequence(config, workdir: str, *, callbacks=()) -> None:
  """Deletion requests one after another (config.sequence), each method scored against retraining (sequence.py)."""
  from e2urec_jax.sequence import run_sequence  # heavy: flax, optax, orbax, pandas
  with workdir_lock.hold(_writable(workdir), 'sequence'):
    run_sequence(config, workdir, callbacks=callbacks)


def evaluate(config, workdir: str, *, model: str | None = None) -> None:
  """Scores every finished model of the workdir against the retrained one and writes the report; with
  `model`, that model's rows alone, merged into the existing report (experiment.evaluate_model).
  The models must have been trained with this config (their fingerprints): results.json says so."""
  from e2urec_jax import experiment, resume  # heavy: flax, optax, orbax, pandas
  from e2urec_jax.eval.evaluate import available_models, verify_models, write_results  # heavy: as resume
  _existing(workdir, 'evaluate')
  if not storage.isdir(run_paths(workdir).model_dir('retrain')):
    raise UserError(f'no retrained model in {workdir}/models: run `retrain` first (it is the reference)')
  with workdir_lock.hold(storage.abspath(workdir), 'evaluate'):
    if model is not None:  # its rows merged into the report, every other row kept
      experiment.evaluate_model(config, workdir, model)
    elif len(experiment_seeds(config)) > 1:  # a run over several seeds: all of them again
      experiment.evaluate_seeds(config, workdir)
    else:
      ctx = _open(config, workdir)
      names = available_models(ctx)
      resume.check_models(config, workdir, ['retrain', 'retrain_seed2', *names])
      verify_models(ctx, names)
      write_results(ctx, names, order=spec.report_order(), extra=experiment.backbone_entry(config))
  if distributed.is_primary():
    print(storage.read_text(os.path.join(storage.abspath(workdir), 'results.md')))


def predict(config, workdir: str, *, input: str | None, output: str | None = None, model: str | None = None,
            forget_key: str | None = None, allow_forgotten: bool = False) -> None:
  """P(Yes) of `model` (default: config.unlearn.method's) for the (user_id, item_id) pairs of the CSV
  `input`. Users (and interactions) forgotten by `forget` requests are refused unless `allow_forgotten`:
  the check needs the operator's key (`forget_key`), as the workdir keeps only keyed hashes of them."""
  from e2urec_jax import forget_audit  # heavy: pandas
  from e2urec_jax.eval.predict import predict as predict_pairs, read_pairs  # heavy: flax, optax, pandas
  name = model or config.unlearn.method
  pairs = read_pairs(input)
  _existing(workdir, 'predict')
  if output:
    _check_predict_output(output, input, workdir)
  forget_audit.refuse_forgotten(workdir, pairs, key_file=forget_key, allow=allow_forgotten)
  p_yes = predict_pairs(_open(config, workdir), name, pairs)
  out = pairs[['user_id', 'item_id']].copy()
  out['p_yes'] = p_yes
  if output and storage.is_remote(output):
    storage.write_bytes(output, out.to_csv(index=False).encode())
    print(f'wrote {len(out)} predictions of {name} to {output}')
  elif output:
    local_files.write_file_atomic(output, out.to_csv(index=False).encode())  # a hidden temp name, then renamed
    print(f'wrote {len(out)} predictions of {name} to {output}')
  else:
    print(out.to_csv(index=False), end='')


def _check_predict_output(output: str, input: str, workdir: str) -> None:
  """Before any scoring: --output must be a file we may write, not the input, nor a file of the run."""
  out = storage.abspath(output)
  if storage.inside(out, workdir):
    raise UserError(f'--output={output} is inside the workdir {workdir}, whose files the run owns; write the '
                    'predictions elsewhere')
  if out == storage.abspath(input):
    raise UserError(f'--output={output} is the --input file; write the predictions to another file')
  if storage.is_remote(out):
    _refuse_foreign_file(output, out)
    return
  if os.path.isdir(out):
    example = os.path.join(output, 'p_yes.csv')
    raise UserError(f'--output={output} is a folder; pass a file name, e.g. --output={example}')
  parent = os.path.dirname(out)
  if not os.path.isdir(parent):
    raise UserError(f'--output={output}: no folder {parent}; create it first or pass another path')
  _refuse_foreign_file(output, out)


PREDICTIONS_HEADER = 'user_id,item_id,p_yes'  # the first line of every predictions file predict writes


def _refuse_foreign_file(output: str, out: str) -> None:
  """predict replaces --output: only a new path or a predictions file it wrote before (its header line)."""
  if not storage.exists(out):
    return
  with storage.open_file(out, 'rb') as f:
    first = f.read(len(PREDICTIONS_HEADER) + 2)
  if first.split(b'\n')[0].rstrip(b'\r') != PREDICTIONS_HEADER.encode():
    raise UserError(f'--output={output} exists and is not a predictions file of an earlier predict (its first line '
                    f'is not {PREDICTIONS_HEADER}): predict replaces --output; pass a new file name')


def export(config, workdir: str, *, output: str | None, model: str | None = None, fmt: str | None = None) -> None:
  """`model` (default: config.unlearn.method's) at `output`: one Hugging Face folder, adapters merged in
  (fmt 'merged', the default), or its adapters as a Hugging Face PEFT folder with their base in
  `output`/base ('peft')."""
  from e2urec_jax.eval.export import FORMATS, export_model, export_peft_model  # heavy: flax, optax
  fmt = fmt or 'merged'
  if fmt not in FORMATS:
    raise UserError(f'--format={fmt!r}: must be one of {", ".join(FORMATS)}')
  if not output:
    raise UserError('export needs --output=DIR (the Hugging Face folder to write)')
  name = model or config.unlearn.method
  _existing(workdir, 'export')
  if fmt == 'peft':
    out = export_peft_model(_open(config, workdir), name, output)
    print(f'exported {name} to {output} as PEFT adapters (adapter_config.json, adapter_model.safetensors); '
          f'their base model in {out}/base: PeftModel.from_pretrained(<base>, {output!r}) loads them')
    return
  export_model(_open(config, workdir), name, output)
  print(f'exported {name} to {output} (Hugging Face layout: config.json, model.safetensors, tokenizer)')


def bench(config, workdir: str) -> None:
  """Times our steps (and the PyTorch reference); needs configs/bench.py."""
  from e2urec_jax.bench import run_bench  # heavy: flax, optax, pandas, scipy
  storage.require_local(workdir, 'bench', 'it writes profiler traces and timings next to the XLA cache')
  run_bench(config, workdir)


def forget(config, workdir: str, *, users: str | None = None, interactions: str | None = None,
           categories: str | None = None, forget_key: str | None = None, callbacks=()) -> None:
  """Serves a forget request on a trained run (forget.py); `forget_key` is the operator's key file,
  outside the workdir (the audit holds keyed hashes of the ids under it)."""
  from e2urec_jax import forget as forget_lib  # heavy: flax, optax, orbax, pandas
  forget_lib.require_local(workdir)
  if not storage.isdir(workdir):
    _existing(workdir, 'forget')
  read_request(users, interactions, categories)  # a malformed request fails before it waits for anyone
  with workdir_lock.hold(storage.abspath(workdir), 'forget'):
    _existing(workdir, 'forget')  # after the lock put back the data a killed command had set aside
    audit = forget_lib.serve(config, workdir, users=users, interactions=interactions, categories=categories,
                             key_file=forget_key, callbacks=callbacks)
  if audit:
    forget_lib.report(audit, workdir)


def audit(config, workdir: str, *, users: str | None = None, interactions: str | None = None,
          forget_key: str | None = None) -> None:
  """Checks the workdir's forget audits with the operator's key: each audit's MAC, and which
  request forgot the given users or interactions (forget_audit.py)."""
  from e2urec_jax import forget_audit  # heavy: pandas
  _existing(workdir, 'audit')
  for line in forget_audit.verify_audits(workdir, key_file=forget_key, users=users, interactions=interactions):
    print(line)


def table(config, workdir: str) -> None:
  """The headline table, the criteria and E2URec's paired comparisons of a finished run
  (eval/headline.py), from its results.json: what the README's first table is printed by, over a run
  recorded under docs/results/. `workdir` may list several runs (A,B): their seeds are pooled."""
  from e2urec_jax.eval import headline  # heavy: scipy
  runs = {}
  for one in [w for w in workdir.split(',') if w]:
    _finish_report(one)
    path = os.path.join(one, 'results.json')
    if not storage.exists(path):
      raise UserError(f'no {path}: `table` reads a finished run\'s results.json; run `run` first, or check --workdir')
    try:
      runs[one] = runtime.read_json(path)
    except ValueError as e:
      raise UserError(f'{path} is not valid JSON ({e}); use an intact copy of the run\'s results.json')
  results = next(iter(runs.values())) if len(runs) == 1 else headline.pool(runs)
  if len(runs) > 1:
    print(f'{len(results["seeds"])} seeds pooled from {len(runs)} runs: {", ".join(runs)}')
  print(headline.table(results))
  print()
  print(headline.criteria_lines(results))
  comparisons = headline.comparison_lines(results)
  if comparisons:
    print()
    print(comparisons)


def _finish_report(workdir: str) -> None:
  """A report an interrupted command had decided to publish is put in place before it is read
  (eval/report_files.py); that takes the workdir's lock, as it writes."""
  if not report_files.pending(workdir):
    return
  try:
    with workdir_lock.hold(storage.abspath(workdir), 'table'):  # the holder rolls the report forward
      pass
  except PermissionError as e:
    raise UserError(f'{workdir} holds a report an interrupted command left half-published ({report_files.JOURNAL}) '
                    f'and this user cannot finish it ({e.strerror}); run `evaluate` on the workdir as its owner')

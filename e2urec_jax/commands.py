"""The commands, as functions of explicit arguments: `main` turns flags into these keyword arguments.

Each takes a validated config (config.validate) and the workdir; commands that train also take
`callbacks` (train/callbacks.py), which every training phase they run sees.
"""
import os

from e2urec_jax import distributed, storage
from e2urec_jax.errors import UserError


def _open(config, workdir):
  from e2urec_jax.train import context, paths
  return context.open_run(config, paths.run_paths(workdir))


def prepare(config, workdir: str) -> None:
  """raw files -> splits, prompts, tokens under <workdir>/data."""
  from e2urec_jax.data.prepare import prepare as prepare_data
  prepare_data(config, workdir)


def train(config, workdir: str, *, callbacks=()) -> None:
  """The original LLMRec (config.train on the whole train split)."""
  from e2urec_jax.methods import llmrec
  stats = llmrec.ensure_original(_open(config, workdir), callbacks)
  print(f'original: {stats["steps"]} steps in {stats["time_s"]:.1f}s (valid loss {stats["best_valid"]:.4f})')


def retrain(config, workdir: str, *, callbacks=()) -> None:
  """The same recipe on the retain split: the reference every method is measured against."""
  from e2urec_jax.methods import llmrec
  stats = llmrec.ensure_retrain(_open(config, workdir), callbacks=callbacks)
  print(f'retrain: {stats["steps"]} steps in {stats["time_s"]:.1f}s (valid loss {stats["best_valid"]:.4f})')


def augment(config, workdir: str, *, callbacks=()) -> None:
  """E2URec's augmented model: the original fine-tuned on the forget set (config.augment)."""
  from e2urec_jax.methods import e2urec
  stats = e2urec.ensure_augmented(_open(config, workdir), callbacks)
  print(f'augmented: {stats["steps"]} steps in {stats["time_s"]:.1f}s')


def unlearn(config, workdir: str, *, callbacks=()) -> None:
  """config.unlearn.method on the run's forget set."""
  from e2urec_jax.methods import runner
  method = config.unlearn.method
  stats = runner.run_method(_open(config, workdir), method, callbacks=callbacks)
  print(f'{method}: unlearned in {stats["time_s"]:.1f}s; model in {workdir}/models/{method}')


def run(config, workdir: str, *, callbacks=()) -> None:
  """The whole experiment (experiment.py), resuming finished phases."""
  from e2urec_jax.experiment import run_experiment
  run_experiment(config, workdir, callbacks=callbacks)


def sequence(config, workdir: str, *, callbacks=()) -> None:
  """Deletion requests one after another (config.sequence), each method scored against retraining (sequence.py)."""
  from e2urec_jax.sequence import run_sequence
  run_sequence(config, workdir, callbacks=callbacks)


def evaluate(config, workdir: str, *, model: str | None = None) -> None:
  """Scores `model` (default: every finished model of the workdir) against the retrained one."""
  from e2urec_jax.eval.evaluate import available_models, write_results
  from e2urec_jax.methods import spec
  from e2urec_jax.train.paths import run_paths
  if not storage.isdir(run_paths(workdir).model_dir('retrain')):
    raise UserError(f'no retrained model in {workdir}/models: run `retrain` first (it is the reference)')
  from e2urec_jax.config import experiment_seeds
  if model is None and len(experiment_seeds(config)) > 1:  # a run over several seeds: all of them again
    from e2urec_jax.experiment import evaluate_seeds
    evaluate_seeds(config, workdir)
  else:
    from e2urec_jax.experiment import e2urec_rows
    ctx = _open(config, workdir)
    write_results(ctx, [model] if model else available_models(ctx), order=spec.report_order(),
                  mechanism_for=e2urec_rows(config))
  if distributed.is_primary():
    print(storage.read_text(os.path.join(storage.abspath(workdir), 'results.md')))


def predict(config, workdir: str, *, input: str | None, output: str | None = None, model: str | None = None) -> None:
  """P(Yes) of `model` (default e2urec) for the (user_id, item_id) pairs of the CSV `input`."""
  from e2urec_jax.eval.predict import predict as predict_pairs, read_pairs
  name = model or 'e2urec'
  pairs = read_pairs(input)
  p_yes = predict_pairs(_open(config, workdir), name, pairs)
  out = pairs[['user_id', 'item_id']].copy()
  out['p_yes'] = p_yes
  if output and storage.is_remote(output):
    storage.write_bytes(output, out.to_csv(index=False).encode())
    print(f'wrote {len(out)} predictions of {name} to {output}')
  elif output:
    tmp = output + '.tmp'
    out.to_csv(tmp, index=False)
    os.replace(tmp, output)
    print(f'wrote {len(out)} predictions of {name} to {output}')
  else:
    print(out.to_csv(index=False), end='')


def export(config, workdir: str, *, output: str | None, model: str | None = None, fmt: str | None = None) -> None:
  """`model` (default e2urec) at `output`: one Hugging Face folder, adapters merged in (fmt 'merged',
  the default), or its adapters as a Hugging Face PEFT folder with their base in `output`/base ('peft')."""
  from e2urec_jax.eval.export import FORMATS, export_model, export_peft_model
  fmt = fmt or 'merged'
  if fmt not in FORMATS:
    raise UserError(f'--format={fmt!r}: must be one of {", ".join(FORMATS)}')
  if not output:
    raise UserError('export needs --output=DIR (the Hugging Face folder to write)')
  name = model or 'e2urec'
  if fmt == 'peft':
    out = export_peft_model(_open(config, workdir), name, output)
    print(f'exported {name} to {output} as PEFT adapters (adapter_config.json, adapter_model.safetensors); '
          f'their base model in {out}/base: PeftModel.from_pretrained(<base>, {output!r}) loads them')
    return
  export_model(_open(config, workdir), name, output)
  print(f'exported {name} to {output} (Hugging Face layout: config.json, model.safetensors, tokenizer)')


def bench(config, workdir: str) -> None:
  """Times our steps (and the PyTorch reference); needs configs/bench.py."""
  from e2urec_jax.bench import run_bench
  storage.require_local(workdir, 'bench', 'it writes profiler traces and timings next to the XLA cache')
  run_bench(config, workdir)


def forget(config, workdir: str, *, users: str | None = None, interactions: str | None = None,
           callbacks=()) -> None:
  """Serves a forget request on a trained run (forget.py)."""
  from e2urec_jax import forget as forget_lib
  audit = forget_lib.serve(config, workdir, users=users, interactions=interactions, callbacks=callbacks)
  if audit:
    forget_lib.report(audit, workdir)

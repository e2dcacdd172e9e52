"""Does forgetting stick? Every reported model fine-tuned again, and how far it gets the forget set back.

In LLM unlearning, a method that only suppresses an answer gives it back after a few steps of
fine-tuning; a recommender is fine-tuned again after a deletion request as a matter of course.
So, with config.eval.relearn.enabled, a copy of every reported model (the original, the retrained
model, each method's) is fine-tuned:
- as deployed, every weight: a LoRA student (E2URec) is merged into its base first, and each
  shard model of an ensemble (SISA, RecEraser) is fine-tuned on the same batches, its aggregation
  kept. Training the adapters alone would give the LoRA methods a smaller, different update than
  the full-weight ones get; fine-tuning the merged weights treats every model the same;
- with the training step of train/ (train/objectives.py's CE, AdamW, train.weight_decay and
  train.max_grad_norm), config.eval.relearn's rate and batch, the same batches for every model;
- on 'forget': a seeded part of the forget set (`samples`), or 'retain': as many retained samples.
After each of config.eval.relearn.steps steps the copy is scored on the rest of the forget set
(the samples fine-tuned on are never measured): symKL and JSD to the original's predictions at
the first answer position, symKL to the retrained model's, forget AUC. `recovery` is how much
closer to the original's predictions the fine-tuning brought the model (its symKL to the original
before minus after; > 0: towards the original). A model that never saw the users moves towards the
original too when fine-tuned on some of their samples, so the retrained model is the reference:
`recovery_vs_retrain` is the model's recovery minus retrain's after the same steps on the same
batches (> 0: it gives back more than a model that never learned the users).

Each copy is a phase of train/loop.py (phases/relearn/<setting>/<model>[/<shard>]: its
metrics.jsonl) that publishes nothing and writes no resume checkpoint. The copies'
weights at each measured step are kept on the host until scored (members x steps of them for an
ensemble).
"""
import dataclasses
import os

import jax
import numpy as np

from e2urec_jax import distributed, runtime, seeds, storage
from e2urec_jax.errors import UserError
from e2urec_jax.data import make_batch
from e2urec_jax.eval import metrics
from e2urec_jax.models import lora
from e2urec_jax.train import artifacts, inference, sampling
from e2urec_jax.train.loop import PhaseOptions, run_phase
from e2urec_jax.train.objectives import ce_loss_fn
from e2urec_jax.train.plan import PhasePlan
from e2urec_jax.train.callbacks import Callback

SETTINGS = ('forget', 'retain')
ORIGINAL, RETRAIN = 'original', 'retrain'


# ------------------------------------------------------------------ settings and samples
def enabled(config) -> bool:
  return bool(config.eval.relearn.enabled)


def step_list(config) -> list[int]:
  """The measured steps, ascending (0, before any fine-tuning, is always measured too)."""
  return sorted({int(x) for x in str(config.eval.relearn.steps).split(',') if x.strip()})


def settings(config) -> list[str]:
  listed = {x.strip() for x in str(config.eval.relearn.settings).split(',')}
  return [s for s in SETTINGS if s in listed]


def sample_count(config, num_forget: int) -> int:
  """Forget samples fine-tuned on: config.eval.relearn.samples as a share (< 1) or a count."""
  samples = float(config.eval.relearn.samples)
  return max(1, int(round(samples * num_forget))) if samples < 1 else int(samples)


def check_samples(config, data, seed: int) -> None:
  """UserError (before any work) when the relearned samples would leave no forget sample to measure."""
  if not enabled(config):
    return
  num_forget = int(np.count_nonzero(data.splits['train'].is_forget))
  n = sample_count(config, num_forget)
  if n >= num_forget:
    raise UserError(f'config.eval.relearn.samples={config.eval.relearn.samples!r}: {n} of the {num_forget} forget '
                    f'samples of seed {seed} would be relearned, leaving none to measure recovery on; '
                    'pass a share below 1 or a smaller count')


@dataclasses.dataclass(frozen=True)
class Rows:
  """Train-split rows: fine-tuned on ('forget', 'retain' setting) and measured on."""
  forget: np.ndarray  # forget samples fine-tuned on
  retain: np.ndarray  # retained samples fine-tuned on, as many
  measured: np.ndarray  # the rest of the forget set: where recovery is measured

  def pool(self, setting: str) -> np.ndarray:
    return self.forget if setting == 'forget' else self.retain


def draw_rows(config, data, seed: int) -> Rows:
  """The seed's draw (seeds.derive(seed, 'relearn', 'samples')): the same for every model."""
  check_samples(config, data, seed)
  train = data.splits['train']
  forget, retain = np.flatnonzero(train.is_forget), np.flatnonzero(~train.is_forget)
  n = sample_count(config, len(forget))
  rng = np.random.default_rng(seeds.derive(seed, 'relearn', 'samples'))
  chosen = np.sort(rng.choice(forget, n, replace=False))
  kept = np.sort(rng.choice(retain, min(n, len(retain)), replace=False))
  return Rows(forget=chosen, retain=kept, measured=np.setdiff1d(forget, chosen))


def recipe(config) -> dict:
  """The optimiser every copy is fine-tuned with (results.json's relearn.recipe)."""
  rl, tr = config.eval.relearn, config.train
  return {'learning_rate': float(rl.learning_rate or tr.learning_rate),
          'batch_size': int(rl.batch_size or tr.batch_size), 'weight_decay': float(tr.weight_decay),
          'max_grad_norm': float(tr.max_grad_norm), 'optimizer': 'adamw',
          'weights': 'every weight it serves (LoRA merged into its base; each shard model of an ensemble)'}


# ------------------------------------------------------------------ the deployed weights
def _full_weights(ctx, path: str):
  """The full weights (host, fp32) a model folder serves: adapters merged into the base they name."""
  if artifacts.is_adapter_dir(path):
    adapters, meta = artifacts.load_adapters(path, expect=ctx.bundle.lora_meta)
    _, base = artifacts.load_full(meta['base_dir'])
    return jax.device_get(lora.merge(base, adapters, meta['alpha'] / meta['r']))
  _, params = artifacts.load_full(path)
  return params


def deployed(ctx, name: str):
  """(member weights, ensemble spec or None) of model `name` as the report scores it."""
  path = ctx.model_dir(name)
  if inference.is_ensemble(path):
    spec = runtime.read_json(os.path.join(path, inference.ENSEMBLE_FILE))
    return [_full_weights(ctx, ctx.model_dir(s)) for s in spec['shards']], spec
  return [_full_weights(ctx, path)], None


def predictor(ctx, members, spec):
  """The model made of `members` (full weights), combined as `spec` says (None: a single model)."""
  singles = [inference.SingleModel(ctx, p, ctx.zero_adapters(p)) for p in members]
  if spec is None:
    return singles[0]
  return inference.Ensemble(singles, spec['aggregate'], spec.get('aggregator'), ctx.data.yes_id, ctx.data.no_id)


def first_logits(ctx, model, rows: np.ndarray) -> np.ndarray:
  """First-answer-position logits [N, V] of `model` on train rows `rows`."""
  out = [model.logits(batch)[:real, 0] for batch, real in inference.iterate_eval(ctx, 'train', rows)]
  return np.concatenate(out)


# ------------------------------------------------------------------ fine-tuning a copy
class _Snapshots(Callback):
  """Keeps the weights of phase `phase` after each step of `at` (host copies)."""

  def __init__(self, phase: str, at):
    self.phase, self.at, self.kept = phase, set(at), {}

  def after_step(self, event) -> None:
    if event.phase == self.phase and event.step in self.at:
      self.kept[event.step] = jax.device_get(event.trainable)


def _clear(path: str) -> None:
  distributed.barrier(f'relearn-clear:{path}')
  if distributed.is_primary() and storage.isdir(path):
    storage.rmtree(path)
  distributed.barrier(f'relearn-cleared:{path}')


def fine_tune(ctx, params, *, setting: str, rows: Rows, phase: str, at) -> dict:
  """{step: weights} of a copy of `params` fine-tuned on `setting`'s rows, after each step of `at`.

  `params` is not changed (the loop trains a copy); the batches depend on the seed and the
  setting alone, so every model sees the same ones."""
  hp = recipe(ctx.config)
  seed, pool, batch_size = int(ctx.config.seed), rows.pool(setting), hp['batch_size']
  batch_seed = seeds.derive(seed, f'relearn/{setting}', 'batches')
  lr_wd = {'lr': hp['learning_rate'], 'weight_decay': hp['weight_decay']}
  plan = PhasePlan(
      name=phase, kind='full', step=ctx.train_step(ce_loss_fn, kind='full', max_grad_norm=hp['max_grad_norm']),
      start=params, trainable=params, frozen={}, num_steps=max(at), examples_per_step=batch_size,
      batch_for_step=lambda step: make_batch(ctx.data, 'train', sampling.batch_indices(pool, batch_size, batch_seed,
                                                                                        step)),
      hparams_for_step=lambda step: lr_wd, base_dir='', seed=seeds.derive(seed, f'relearn/{setting}', 'dropout'),
      save='none')
  phase_dir = ctx.phase_dir(phase)
  _clear(phase_dir)  # a copy is fine-tuned from its model every time (its state is no result: never resumed)
  snapshots = _Snapshots(phase, at)
  run_phase(plan, PhaseOptions(phase_dir=phase_dir, mesh=ctx.mesh, base_sha256=None, resumable=False,
                               progress=bool(ctx.config.progress), callbacks=(snapshots,), ctx=ctx))
  return snapshots.kept


# ------------------------------------------------------------------ the measurement
def _point(logits, labels, orig, retrain, yes: int, no: int) -> dict:
  to_orig, to_retrain = metrics.distances_from_logits(logits, orig), metrics.distances_from_logits(logits, retrain)
  return {'sym_kl_original': to_orig['sym_kl'], 'jsd_original': to_orig['jsd'], 'sym_kl_retrain': to_retrain['sym_kl'],
          'forget_auc': metrics.auc(labels, metrics.yes_probability(logits, yes, no))}


def curves(ctx, name: str, rows: Rows, steps, orig, retrain) -> dict:
  """{setting: {k: point}} of model `name` fine-tuned in each setting (k = 0: the model as published)."""
  labels, yes, no = ctx.data.splits['train'].label[rows.measured], ctx.data.yes_id, ctx.data.no_id
  score = lambda model: _point(first_logits(ctx, model, rows.measured), labels, orig, retrain, yes, no)  # noqa: E731
  published = score(inference.load_predictor(ctx, name))
  members, spec = deployed(ctx, name)
  out = {}
  for setting in settings(ctx.config):
    tuned = []
    for i, params in enumerate(members):
      phase = os.path.join('relearn', setting, name, *([f'shard{i}'] if spec else []))
      tuned.append(fine_tune(ctx, params, setting=setting, rows=rows, phase=phase, at=steps))
    out[setting] = {0: dict(published), **{k: score(predictor(ctx, [t[k] for t in tuned], spec)) for k in steps}}
  return out


def measure(ctx, names) -> tuple[dict, dict]:
  """({name: {setting: {str(k): point}}}, results.json's 'relearn' entry) for the models `names`.

  The retrained model is measured whatever `names` holds (it is every row's reference)."""
  config = ctx.config
  rows, steps = draw_rows(config, ctx.data, int(config.seed)), step_list(config)
  orig = first_logits(ctx, inference.load_predictor(ctx, ORIGINAL), rows.measured)
  retrain = first_logits(ctx, inference.load_predictor(ctx, RETRAIN), rows.measured)
  order = [RETRAIN] + [n for n in names if n != RETRAIN]
  found = {name: curves(ctx, name, rows, steps, orig, retrain) for name in order}
  for setting in settings(config):
    reference = found[RETRAIN][setting]
    for name in order:
      points = found[name][setting]
      for k, point in points.items():
        point['recovery'] = points[0]['sym_kl_original'] - point['sym_kl_original']
        point['recovery_vs_retrain'] = point['recovery'] - (reference[0]['sym_kl_original']
                                                            - reference[k]['sym_kl_original'])
  rows_out = {name: {s: {str(k): p for k, p in pts.items()} for s, pts in found[name].items()}
              for name in order if name in names}
  info = {'steps': steps, 'settings': settings(config), 'relearned_samples': int(len(rows.forget)),
          'retain_samples': int(len(rows.retain)), 'measured_samples': int(len(rows.measured)),
          'recipe': recipe(config)}
  return rows_out, info


def attach(ctx, results: dict, names) -> None:
  """Adds each row's 'relearn' and results.json's 'relearn' entry (config.eval.relearn.enabled)."""
  rows, info = measure(ctx, [n for n in names if n in results['methods']])
  for name, row in rows.items():
    results['methods'][name]['relearn'] = row
  results['relearn'] = info

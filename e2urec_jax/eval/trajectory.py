"""Every unlearning method scored every N steps: where it was closest to the retrained model,
whether it overshot, and what a rule that never sees the retrained model would have picked.

`TrajectoryRecorder` is a training callback (train/callbacks.py). Every `every` steps of a
recorded phase it scores the model being trained on:
- the forget set: distance to the retrained model at the first answer position (symKL, the
  paper's "JSD", and the true JSD), forget AUC, and the loss attack's MIA AUC against
  non-members (test samples of users outside the forget set);
- a fixed random subset of the test split: test AUC;
- the forget users' *valid* samples, which nobody trained on: `heldout_mia_auc`, the loss
  attack telling the forget samples from these later samples of the same users. A model that
  never saw the forget samples cannot tell them apart (0.5 up to the drift of a user's taste
  over time); the original can. It needs no retrained model, so it is what a retrain-free
  stopping rule can read (train/heldout.py).
Points go to <phase dir>/trajectory.jsonl (a resumed phase drops the points after its
checkpoint). Scoring time is excluded from the method's time by the training loop.
"""
import json
import os

import numpy as np

from e2urec_jax.eval import metrics
from e2urec_jax.eval.model_scores import score
from e2urec_jax.train import heldout as heldout_lib, inference
from e2urec_jax.train.callbacks import Callback

FILE = 'trajectory.jsonl'


def _scores(ctx, predictor, split, rows):
  return score(ctx, predictor, split, rows, keep_logits=split == 'train', desc='trajectory')


class _Reference:
  """What every point of one run's seed is compared with: the retrained model's forget logits and
  the fixed row sets, computed once per seed (the retrained model must be trained before)."""

  def __init__(self, ctx, test_samples: int):
    data = ctx.data
    train, test = data.splits['train'], data.splits['test']
    self.heldout_rows = heldout_lib.HeldoutRows(ctx)
    self.forget = self.heldout_rows.forget
    rng = np.random.default_rng(0)  # the same test rows for every method and seed
    self.test = np.sort(rng.permutation(len(test.label))[:test_samples])
    self.nonmember = self.test[~np.isin(test.user_id[self.test], self.heldout_rows.forget_users)]
    self.forget_labels, self.test_labels = train.label[self.forget], test.label[self.test]
    self.retrain_first = _scores(ctx, inference.load_predictor(ctx, 'retrain'), 'train', self.forget)['first_logits']


def score_point(ctx, reference: _Reference, params, adapters) -> dict:
  """One trajectory point of the model (params, adapters)."""
  model = inference.SingleModel(ctx, params, adapters)
  forget = _scores(ctx, model, 'train', reference.forget)
  test = _scores(ctx, model, 'test', reference.test)
  nonmember_loss = test['loss'][np.isin(reference.test, reference.nonmember)]
  d = metrics.distances_from_logits(forget['first_logits'], reference.retrain_first)
  point = {'sym_kl': d['sym_kl'], 'jsd': d['jsd'], 'forget_auc': metrics.auc(reference.forget_labels, forget['p_yes']),
           'mia_auc': metrics.mia_auc(forget['loss'], nonmember_loss) if len(nonmember_loss) else float('nan'),
           'test_auc': metrics.auc(reference.test_labels, test['p_yes']), 'heldout_mia_auc': float('nan')}
  point['heldout_mia_auc'] = reference.heldout_rows.auc(ctx, model, forget_loss=forget['loss'])
  return point


class TrajectoryRecorder(Callback):
  """Scores the phases named in `phases` every `every` steps (and at their last step)."""

  def __init__(self, phases, every: int, test_samples: int = 512):
    self.phases, self.every, self.test_samples = set(phases), int(every), int(test_samples)
    self._references = {}
    self._started = set()

  def _reference(self, ctx) -> _Reference:
    key = ctx.paths.phases
    if key not in self._references:
      self._references[key] = _Reference(ctx, self.test_samples)
    return self._references[key]

  def after_step(self, event) -> None:
    if event.phase not in self.phases or event.model is None:
      return
    if event.step % self.every and event.step != event.num_steps:
      return
    ctx = event.ctx
    path = os.path.join(ctx.phase_dir(event.phase), FILE)
    if (path, ctx.paths.phases) not in self._started:  # first point of this phase in this process
      self._started.add((path, ctx.paths.phases))
      _drop_from(path, event.step)
    params, adapters = event.model()
    point = {'step': int(event.step), **score_point(ctx, self._reference(ctx), params, adapters)}
    with open(path, 'a') as f:
      f.write(json.dumps(point) + '\n')


def _drop_from(path: str, step: int) -> None:
  """Forgets the points at and after `step` (a resumed phase scores them again)."""
  if not os.path.exists(path):
    return
  keep = [line for line in read(path) if line['step'] < step]
  with open(path, 'w') as f:
    f.writelines(json.dumps(p) + '\n' for p in keep)


def read(path: str) -> list[dict]:
  """The points of a trajectory file, in step order (a line cut short by a crash is skipped)."""
  if not os.path.exists(path):
    return []
  points = []
  with open(path) as f:
    for line in f:
      try:
        points.append(json.loads(line))
      except ValueError:
        continue
  return sorted(points, key=lambda p: p['step'])


def of_phase(ctx, name: str) -> list[dict]:
  return read(os.path.join(ctx.phase_dir(name), FILE))

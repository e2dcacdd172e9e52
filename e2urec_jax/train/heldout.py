"""The retrain-free signal: can a loss attack tell the forget samples from the same users' later,
never-trained samples?

The forget users' *valid* samples come after their train samples in time and no model trained
on them. A model that never saw the forget samples cannot tell the two apart (AUC 0.5, up to
the drift of a user's taste); the original, which memorised them, can. Unlike every distance
to the retrained model, this needs no retrained model, so it is what a user can read in
practice: the trajectories report it (eval/trajectory.py), `eval/seed_report.auto_step` picks
the point nearest 0.5 after the fact, and `config.unlearn.auto='heldout_mia'` stops a method
there while it trains (methods/auto_stop.py). It lives with training, which both use.
"""
import numpy as np

from e2urec_jax import scoring
from e2urec_jax.errors import UserError
from e2urec_jax.train.inference import iterate_eval

TARGET = 0.5


def losses(ctx, predictor, split: str, indices: np.ndarray) -> np.ndarray:
  """Per-sample answer loss of `predictor` (anything with `logits(batch)`) on `indices` of `split`."""
  out = []
  for device, host, real in iterate_eval(ctx, split, indices, with_host=True):
    logits = np.asarray(predictor.logits(device))[:real]
    out.append(scoring.per_example_loss(logits, host['answer_labels'][:real], host['answer_mask'][:real]))
  return np.concatenate(out) if out else np.zeros(0)


class HeldoutRows:
  """The rows the signal compares, fixed per run: the forget samples (train split) and the
  valid samples of the forget users (`forget_users`)."""

  def __init__(self, ctx):
    train, valid = ctx.data.splits['train'], ctx.data.splits['valid']
    self.forget = np.flatnonzero(train.is_forget)
    self.forget_users = np.unique(train.user_id[self.forget])
    self.heldout = np.flatnonzero(np.isin(valid.user_id, self.forget_users))

  def auc(self, ctx, predictor, forget_loss=None) -> float:
    """The loss attack's AUC, forget samples (members) against held-out ones; NaN without held-out
    samples. `forget_loss`: the forget samples' losses when the caller has scored them already."""
    if not len(self.heldout):
      return float('nan')
    if forget_loss is None:
      forget_loss = losses(ctx, predictor, 'train', self.forget)
    return scoring.membership_auc(forget_loss, losses(ctx, predictor, 'valid', self.heldout))


def require(rows: HeldoutRows, key: str) -> HeldoutRows:
  """`rows`, or a UserError naming `key` when the forget users have no valid samples to compare with."""
  if not len(rows.heldout):
    raise UserError(f'{key}: the forget users have no valid samples, so the held-out membership signal '
                    'cannot be measured; use a split with valid samples (data.split) or turn it off')
  return rows

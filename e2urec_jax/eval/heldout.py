"""The retrain-free signal: can a loss attack tell the forget samples from the same users' later,
never-trained samples?

The forget users' *valid* samples come after their train samples in time and no model trained
on them. A model that never saw the forget samples cannot tell the two apart (AUC 0.5, up to
the drift of a user's taste); the original, which memorised them, can. Unlike every distance
to the retrained model, this needs no retrained model, so it is what a user can read in
practice: the trajectories report it (eval/trajectory.py), `seed_report.auto_step` picks the
point nearest 0.5 after the fact, and `config.unlearn.auto='heldout_mia'` stops a method there
while it trains (methods/auto_stop.py).
"""
import numpy as np

from e2urec_jax.eval import metrics
from e2urec_jax.errors import UserError

TARGET = 0.5


class HeldoutRows:
  """The rows the signal compares, fixed per run: the forget samples (train split) and the
  valid samples of the forget users."""

  def __init__(self, ctx):
    train, valid = ctx.data.splits['train'], ctx.data.splits['valid']
    self.forget = np.flatnonzero(train.is_forget)
    forget_users = np.unique(train.user_id[self.forget])
    self.heldout = np.flatnonzero(np.isin(valid.user_id, forget_users))

  def auc(self, ctx, predictor, forget_loss=None) -> float:
    """The loss attack's AUC, forget samples (members) against held-out ones; NaN without held-out
    samples. `forget_loss`: the forget samples' losses when the caller has scored them already."""
    from e2urec_jax.eval.evaluate import score
    if not len(self.heldout):
      return float('nan')
    if forget_loss is None:
      forget_loss = score(ctx, predictor, 'train', self.forget, desc='held-out MIA')['loss']
    heldout_loss = score(ctx, predictor, 'valid', self.heldout, desc='held-out MIA')['loss']
    return metrics.mia_auc(forget_loss, heldout_loss)


def require(rows: HeldoutRows, key: str) -> HeldoutRows:
  """`rows`, or a UserError naming `key` when the forget users have no valid samples to compare with."""
  if not len(rows.heldout):
    raise UserError(f'{key}: the forget users have no valid samples, so the held-out membership signal '
                    'cannot be measured; use a split with valid samples (data.split) or turn it off')
  return rows

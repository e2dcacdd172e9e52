"""Retrain-free stopping (`config.unlearn.auto`): each method trained by steps stops where a loss
attack can no longer tell its forget samples from the same users' unseen later samples.

Nobody who serves a deletion has the retrained model, so the number of steps cannot be chosen
by the distance to it. `heldout_mia` reads the held-out membership AUC instead (train/heldout.py):
every `auto_every` steps the phase's validation scores |AUC - 0.5|; the training loop keeps the
model with the lowest and stops after `auto_patience` checks without a lower one
(train/loop.py's early stopping), so the published model is the one at the chosen step. The
same rule applies to every method it can stop: none is tuned alone.
"""
import dataclasses

from e2urec_jax.train import heldout, inference, runner

KEY = 'heldout_mia_gap'  # |held-out MIA AUC - 0.5|, as metrics.jsonl logs each check


def apply(ctx, plan: runner.PhasePlan) -> runner.PhasePlan:
  """`plan` with the retrain-free stop when config.unlearn.auto asks for it."""
  un = ctx.config.unlearn
  mode = str(un.get('auto', '') or '')
  if not mode:
    return plan
  rows = heldout.require(heldout.HeldoutRows(ctx), "config.unlearn.auto='heldout_mia'")
  weights = runner.evaluation_weights(ctx, plan)  # trainable -> (params, adapters)

  def gap(trainable) -> float:
    params, adapters = weights(trainable)
    return abs(rows.auc(ctx, inference.SingleModel(ctx, params, adapters)) - heldout.TARGET)

  return dataclasses.replace(plan, validate=gap, eval_every=int(un.auto_every), patience=int(un.auto_patience),
                             valid_key=KEY, time_to_best=False, extra={**plan.extra, 'auto': mode})

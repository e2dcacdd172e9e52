"""What deleting some of a user's interactions does to the rest of that user (config.data.forget_unit
'interactions' or 'category').

When whole users are forgotten, nothing of theirs is left to serve. When a user deletes one rating,
or every rating of a category, the platform keeps serving them: their other train samples stay in
the retain set and their test samples are still asked. Those are the *collateral* samples, scored
apart from the deleted ones (the forget set) for every model:
- 'retained': the forget users' train samples that were not deleted (the retrained model trained on
  them, so a good unlearning keeps answering them as it does);
- 'test': the forget users' test samples (what the users are recommended next).
On each: AUC of the labels and the symmetric KL of the first-answer distribution to the retrained
model's (as the forget set's sym_kl). A method that erases the user instead of the interactions
moves these away from retrain; one that deletes nothing stays close on them but not on the forget set.
"""
import numpy as np

from e2urec_jax.eval import metrics
from e2urec_jax.eval.report_schema import COLLATERAL_GROUPS as GROUPS  # methods.<m>.collateral.<group>


def unit_of(config) -> str:
  return str(config.data.get('forget_unit', 'user'))


def collateral_rows(data) -> dict:
  """{'retained': train rows, 'test': test rows} of the users that hold a forget sample."""
  train, test = data.splits['train'], data.splits['test']
  users = np.unique(train.user_id[train.is_forget])
  return {'retained': np.flatnonzero(~train.is_forget & np.isin(train.user_id, users)),
          'test': np.flatnonzero(np.isin(test.user_id, users))}


SPLIT_OF = {'retained': 'train', 'test': 'test'}


class Collateral:
  """The collateral rows and the retrained model's logits on them, scored once per evaluation."""

  def __init__(self, ctx, reference, score):
    """`reference`: the retrained model's predictor; `score`: eval/evaluate.py's score()."""
    self.ctx, self.score = ctx, score
    self.rows = collateral_rows(ctx.data)
    self.reference = {g: self._scored(reference, g, 'retrain') for g in GROUPS}

  def info(self) -> dict:
    """results.json's 'collateral': how many samples each group holds, of how many users."""
    train = self.ctx.data.splits['train']
    return {'unit': unit_of(self.ctx.config), 'users': int(len(np.unique(train.user_id[train.is_forget]))),
            **{g: int(len(self.rows[g])) for g in GROUPS}}

  def _scored(self, predictor, group: str, name: str):
    if not len(self.rows[group]):
      return None
    return self.score(self.ctx, predictor, SPLIT_OF[group], self.rows[group], keep_logits=True,
                      desc=f'{name}/collateral {group}')

  def measure(self, predictor, name: str) -> dict:
    """{group: {'auc', 'sym_kl', 'samples'}} of one model (the retrained one: its own scores)."""
    data = self.ctx.data
    out = {}
    for group in GROUPS:
      ref = self.reference[group]
      if ref is None:
        out[group] = {'auc': None, 'sym_kl': None, 'samples': 0}
        continue
      got = ref if name == 'retrain' else self._scored(predictor, group, name)
      labels = data.splits[SPLIT_OF[group]].label[self.rows[group]]
      out[group] = {'auc': metrics.auc(labels, got['p_yes']),
                    'sym_kl': metrics.distances_from_logits(got['first_logits'], ref['first_logits'])['sym_kl'],
                    'samples': int(len(self.rows[group]))}
    return out

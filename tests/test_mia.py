"""Membership-inference attacks against hand-computed scores and AUCs."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from e2urec_jax.eval import mia

YES, NO = 0, 1


def _logits(p_yes_list, vocab=4):
  """First-position logits whose Yes/No renormalised P(Yes) is given; other tokens at -inf-ish."""
  x = np.full((len(p_yes_list), vocab), -30.0)
  for i, p in enumerate(p_yes_list):
    x[i, YES], x[i, NO] = math.log(p), math.log(1 - p)
  return x


def test_scores_by_hand():
  logits = _logits([0.9, 0.2])
  labels = np.array([1, 1])
  conf = mia.scores('confidence', first_logits=logits, labels=labels, yes_id=YES, no_id=NO)
  np.testing.assert_allclose(conf, [0.9, 0.2], atol=1e-9)
  ent = mia.scores('entropy', first_logits=logits, labels=labels, yes_id=YES, no_id=NO)
  np.testing.assert_allclose(ent, [0.9 * math.log(0.9) + 0.1 * math.log(0.1), 0.2 * math.log(0.2) + 0.8 * math.log(0.8)])
  ment = mia.scores('modified_entropy', first_logits=logits, labels=labels, yes_id=YES, no_id=NO)
  # Mentr = -(1 - p_y) log p_y - p_other log(1 - p_other); with two classes 1 - p_other = p_y.
  np.testing.assert_allclose(ment, [0.1 * math.log(0.9) + 0.1 * math.log(0.9), 0.8 * math.log(0.2) + 0.8 * math.log(0.2)])
  # A No label: the true answer is No, so P(true) = 1 - P(Yes).
  np.testing.assert_allclose(mia.scores('confidence', first_logits=_logits([0.3]), labels=np.array([0]),
                                        yes_id=YES, no_id=NO), [0.7], atol=1e-9)
  np.testing.assert_allclose(mia.scores('loss', loss=np.array([0.5, 2.0])), [-0.5, -2.0])
  np.testing.assert_allclose(mia.scores('reference', loss=np.array([0.5, 2.0]), ref_loss=np.array([1.0, 1.0])), [0.5, -1.0])
  with pytest.raises(ValueError, match='unknown attack'):
    mia.scores('zlib')


def test_auc_matches_sklearn_and_perfect_separation():
  rng = np.random.default_rng(0)
  m, n = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
  expect = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[m, n])
  assert mia.attack_auc(m, n) == pytest.approx(expect)
  assert mia.attack_auc([3, 4], [1, 2]) == 1.0 and mia.attack_auc([1, 2], [3, 4]) == 0.0


def test_suite_members_with_sharper_answers_are_found():
  members = {'first_logits': _logits([0.95, 0.9, 0.97]), 'labels': np.array([1, 1, 1]),
             'loss': np.array([0.05, 0.1, 0.03]), 'ref_loss': np.array([0.7, 0.7, 0.7])}
  nonmembers = {'first_logits': _logits([0.6, 0.4, 0.55]), 'labels': np.array([1, 0, 1]),
                'loss': np.array([0.5, 0.5, 0.6]), 'ref_loss': np.array([0.5, 0.5, 0.6])}
  out = mia.suite(members, nonmembers, yes_id=YES, no_id=NO)
  assert set(out) == set(mia.ATTACKS)
  assert all(v == 1.0 for v in out.values())
  out = mia.suite({k: v for k, v in members.items() if k != 'ref_loss'}, nonmembers, yes_id=YES, no_id=NO)
  assert 'reference' not in out


def test_sample_scores_and_aucs_as_evaluation_uses_them():
  first = _logits([0.9, 0.6, 0.2])
  labels, loss = np.array([1, 1, 0]), np.array([0.1, 0.5, 0.2])
  out = mia.sample_scores(first_logits=first, labels=labels, loss=loss, yes_id=YES, no_id=NO)
  assert set(out) == {'loss', 'confidence', 'entropy', 'modified_entropy'}  # no reference model given
  np.testing.assert_allclose(out['confidence'], [0.9, 0.6, 0.8], atol=1e-9)
  np.testing.assert_allclose(out['loss'], -loss)
  with_ref = mia.sample_scores(first_logits=first, labels=labels, loss=loss, ref_loss=np.array([0.3, 0.3, 0.3]),
                               yes_id=YES, no_id=NO)
  np.testing.assert_allclose(with_ref['reference'], [0.2, -0.2, 0.1])
  # Members = rows 0 and 2 (confidence 0.9, 0.8), non-members = row 1 (0.6): confidence separates them fully;
  # loss: member scores -0.1, -0.2 vs -0.5: fully too; the reference attack appears only with both sides scored.
  take = lambda d, rows: {k: v[rows] for k, v in d.items()}  # noqa: E731
  table = mia.aucs(take(with_ref, [0, 2]), take(out, [1]))
  assert table['confidence'] == 1.0 and table['loss'] == 1.0 and table['reference'] is None
  assert set(table) == set(mia.ATTACKS)

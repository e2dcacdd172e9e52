"""Active vs inactive users: the split rule and the per-group AUC, by hand."""
import math

import numpy as np
import pytest

from e2urec_jax.eval import fairness


def test_activity_split_at_the_median_of_train_samples():
  # Train samples per user: 1 -> 1, 2 -> 2, 3 -> 3, 4 -> 6; median over train users = 2.5.
  train = np.array([1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4])
  test = np.array([1, 3, 4, 5, 2, 4])  # user 5 has no train sample: inactive
  active, info = fairness.activity_split(train, test)
  assert active.tolist() == [False, True, True, False, False, True]
  assert info['median_train_samples'] == 2.5
  assert (info['active_users'], info['inactive_users']) == (2, 3)
  assert (info['active_test_samples'], info['inactive_test_samples']) == (3, 3)
  assert 'median' in info['rule']


def test_group_auc_and_gap_change():
  labels = np.array([1, 0, 1, 0, 1, 0])
  p_yes = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.6])  # active rows ranked perfectly; inactive ones badly
  active = np.array([True, True, True, True, False, False])
  g = fairness.group_auc(labels, p_yes, active)
  assert g == {'auc_active': 1.0, 'auc_inactive': 0.0, 'gap': 1.0}
  rows = {'original': {'fairness': {'gap': 0.25}}, 'e2urec': {'fairness': dict(g)}, 'sisa': {}}
  fairness.with_gap_change(rows)
  assert rows['e2urec']['fairness']['gap_change'] == pytest.approx(0.75)
  assert rows['original']['fairness']['gap_change'] == 0.0
  assert 'fairness' not in rows['sisa']
  one_class = fairness.group_auc(np.array([1, 1, 0]), np.array([0.5, 0.6, 0.1]), np.array([True, True, False]))
  assert math.isnan(one_class['auc_active']) and math.isnan(one_class['gap'])
  rows = {'e2urec': {'fairness': dict(g)}}  # no original scored (evaluate --model=e2urec)
  fairness.with_gap_change(rows)
  assert rows['e2urec']['fairness']['gap_change'] is None

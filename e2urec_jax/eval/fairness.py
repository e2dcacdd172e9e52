"""Fairness after forgetting: recommendation quality for active against inactive users.

Rule (stated in every report): a user's activity is their number of train samples; the
median is taken over the train users; a test sample belongs to an *active* user when that
user has more train samples than the median, else to an *inactive* one (users with no train
sample at all are inactive). Each method's test AUC is computed on both groups; the gap is
active minus inactive, and its change from the original model's gap (> 0: active users gained
on inactive ones) says how unlearning moved the difference between the groups.
"""
import numpy as np

from e2urec_jax.eval import metrics

RULE = ('active user: more train samples than the median number of train samples per train user; '
        'inactive: the rest (users without train samples included); test AUC per group, gap = active - inactive')


def activity_split(train_user_ids, test_user_ids) -> tuple[np.ndarray, dict]:
  """(active [N_test] bool over the test rows, a description of the split for the report)."""
  users, counts = np.unique(np.asarray(train_user_ids), return_counts=True)
  median = float(np.median(counts)) if len(counts) else 0.0
  test_users = np.asarray(test_user_ids)
  pos = np.clip(np.searchsorted(users, test_users), 0, max(len(users) - 1, 0))
  known = (users[pos] == test_users) if len(users) else np.zeros(len(test_users), bool)
  test_counts = np.where(known, counts[pos] if len(counts) else 0, 0)
  active = test_counts > median
  info = {'rule': RULE, 'median_train_samples': median,
          'active_users': int(len(np.unique(test_users[active]))),
          'inactive_users': int(len(np.unique(test_users[~active]))),
          'active_test_samples': int(active.sum()), 'inactive_test_samples': int((~active).sum())}
  return active, info


def group_auc(labels, p_yes, active) -> dict:
  """Test AUC of the active and the inactive group, and the gap (active - inactive); NaN for a one-class group."""
  labels, p_yes, active = np.asarray(labels), np.asarray(p_yes), np.asarray(active, bool)
  a = metrics.auc(labels[active], p_yes[active]) if active.any() else float('nan')
  b = metrics.auc(labels[~active], p_yes[~active]) if (~active).any() else float('nan')
  return {'auc_active': a, 'auc_inactive': b, 'gap': a - b}


def with_gap_change(rows: dict, reference: str = 'original') -> None:
  """Adds fairness.gap_change (gap - the reference row's gap) to every row that has a fairness group, in place;
  None where the reference row was not scored."""
  ref = (rows.get(reference) or {}).get('fairness') or {}
  base = ref.get('gap')
  for row in rows.values():
    group = row.get('fairness')
    if group is not None:
      ok = base is not None and np.isfinite(base) and np.isfinite(group['gap'])
      group['gap_change'] = float(group['gap'] - base) if ok else None

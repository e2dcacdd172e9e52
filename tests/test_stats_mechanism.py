"""Seed statistics and E2URec's mechanism measures against hand-computed values."""
import math

import numpy as np
import pytest

from e2urec_jax.eval import metrics, stats
from e2urec_jax.methods import teacher_mechanism as mechanism


def test_mean_std_is_sample_std_and_skips_missing():
  s = stats.mean_std([1.0, 2.0, None, float('nan'), 4.0])
  assert s['n'] == 3 and s['mean'] == pytest.approx(7 / 3)
  assert s['std'] == pytest.approx(np.std([1, 2, 4], ddof=1))
  assert stats.mean_std([5.0])['std'] == 0.0
  assert math.isnan(stats.mean_std([])['mean'])


def test_paired_t_interval_by_hand():
  a = np.array([0.10, 0.12, 0.08, 0.11])
  b = np.array([0.15, 0.14, 0.13, 0.18])
  d = a - b  # -0.05 -0.02 -0.05 -0.07
  out = stats.paired_comparison(a, b)
  half = 3.182446305284263 * d.std(ddof=1) / 2  # t_{0.975, 3} * sd / sqrt(4)
  assert out['mean_diff'] == pytest.approx(d.mean())
  assert out['ci_low'] == pytest.approx(d.mean() - half) and out['ci_high'] == pytest.approx(d.mean() + half)
  assert out['wins'] == 4 and out['n'] == 4 and out['excludes_zero']
  mixed = stats.paired_comparison([0.1, 0.3], [0.2, 0.2])
  assert mixed['wins'] == 1 and not mixed['excludes_zero']
  one = stats.paired_comparison([0.1], [0.2])
  assert math.isnan(one['ci_low']) and not one['excludes_zero']
  with pytest.raises(ValueError):
    stats.paired_comparison([1, 2], [1])


def test_gap_closed():
  assert stats.gap_closed(0.4, 0.25, 0.1) == pytest.approx(0.5)
  assert stats.gap_closed(0.4, 0.5, 0.1) < 0
  assert math.isnan(stats.gap_closed(0.1, 0.05, 0.1))


def test_teacher_and_kd_by_hand():
  orig = np.array([[2.0, 0.0, -1.0]])
  aug = np.array([[3.0, -1.0, -1.0]])
  np.testing.assert_allclose(mechanism.forgetting_teacher(orig, aug, 2.0), [[0.0, 0.0, -1.0]])
  t = np.array([[0.0, 0.0]])
  s = np.array([[math.log(3.0), 0.0]])  # student probs 3/4, 1/4
  assert mechanism.distillation_loss(t, s) == pytest.approx(-0.5 * math.log(0.75) - 0.5 * math.log(0.25))


def test_alignment_follows_memorisation_per_user():
  # Two users; yes id 0, no id 1; every label Yes. User 1 memorised (delta 2), user 2 not (delta 0).
  labels = np.array([1, 1, 1, 1])
  users = np.array([1, 1, 2, 2])
  retrain = np.zeros((4, 2))
  orig = np.array([[2.0, 0], [2.0, 0], [0.0, 0], [0.0, 0]])
  aligned = orig + np.array([[1.0, 0], [1.0, 0], [0.1, 0], [0.1, 0]])  # rises where memorised
  opposed = orig + np.array([[0.1, 0], [0.1, 0], [1.0, 0], [1.0, 0]])  # rises where not
  a = mechanism.alignment(orig, retrain, aligned, labels, users, 0, 1)
  b = mechanism.alignment(orig, retrain, opposed, labels, users, 0, 1)
  assert a['user_corr'] == pytest.approx(1.0) and b['user_corr'] == pytest.approx(-1.0)
  assert a['mean_delta'] == pytest.approx(1.0) and a['mean_rise'] == pytest.approx(0.55)
  # A No label flips the margin's sign: the original surer of "No" than retrain is memorisation too.
  flip = mechanism.alignment(np.array([[0.0, 2.0]]), np.zeros((1, 2)), np.array([[0.0, 3.0]]), np.array([0]),
                             np.array([7]), 0, 1)
  assert flip['mean_delta'] == pytest.approx(2.0) and flip['mean_rise'] == pytest.approx(1.0)


def test_forgetting_teacher_mechanism_entry():
  rng = np.random.default_rng(0)
  orig, retrain, aug = (rng.normal(size=(6, 5)) for _ in range(3))
  out = mechanism.forgetting_teacher_mechanism(orig=orig, retrain=retrain, aug=aug, student=orig, alpha=2.0,
                                   labels=np.array([1, 0, 1, 0, 1, 0]), users=np.array([1, 1, 2, 2, 3, 3]),
                                   yes_id=0, no_id=1,
                                   distance=lambda logits: metrics.distances_from_logits(logits, retrain))
  assert out['student'] == out['original']  # the student before any step is the original
  assert out['kd_to_teacher']['start'] == out['kd_to_teacher']['end'] >= out['kd_to_teacher']['floor']
  assert set(out['alignment']) == {'user_corr', 'sample_corr', 'mean_delta', 'mean_rise', 'users'}
  assert out['original']['sym_kl'] == pytest.approx(metrics.distances_from_logits(orig, retrain)['sym_kl'])
  # The report's section of it, as E2URec's spec declares it (MethodSpec.diagnostic_report).
  from e2urec_jax.methods import e2urec
  lines = e2urec.SPEC.diagnostic_report({'e2urec': out})
  assert lines[1].startswith("## E2URec's teacher, measured") and lines[-1].startswith('| `e2urec` | 2 | ')

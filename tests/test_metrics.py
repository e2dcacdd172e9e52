"""Metrics against scikit-learn, hand-computed cases and plain numpy formulas."""
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from e2urec_jax.eval import metrics


def _random_probs(rng, n, v, sparse=False):
  p = rng.dirichlet(np.ones(v) * 0.5, size=n)
  if sparse:
    p[rng.random((n, v)) < 0.3] = 0.0
    p[:, 0] += 1e-3  # keep every row non-empty
    p /= p.sum(-1, keepdims=True)
  return p


def test_auc_matches_sklearn_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(5):
    y = rng.integers(0, 2, size=200)
    s = rng.integers(0, 10, size=200) / 10.0  # many ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    s = rng.normal(size=200)
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_hand_cases():
  assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
  assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
  assert metrics.auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
  assert metrics.auc(np.array([True, False]), [0.1, 0.9]) == 0.0
  assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))  # one class: NaN, documented
  with pytest.raises(ValueError):
    metrics.auc([0, 1, -1], [0.1, 0.2, 0.3])  # padding labels must be dropped first


def test_logloss_and_accuracy_match_sklearn():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 2, size=300)
  p = rng.uniform(0.01, 0.99, size=300)
  assert metrics.logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-10)
  assert metrics.accuracy(y, p) == pytest.approx(accuracy_score(y, p > 0.5))
  assert metrics.accuracy(y, p, threshold=0.3) == pytest.approx(accuracy_score(y, p > 0.3))
  # hand cases: clipping at eps, and the strict threshold
  assert metrics.logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7))
  assert metrics.logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7))
  assert metrics.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
  assert metrics.accuracy([1, 0, 1], [0.5, 0.5, 0.9]) == pytest.approx(2 / 3)
  out = metrics.binary_metrics(y, p)
  assert set(out) == {'auc', 'logloss', 'acc'}


def test_yes_probability():
  logits = np.array([[0.0, 2.0, 1.0], [5.0, -1.0, 3.0]], np.float32)
  p = metrics.yes_probability(logits, yes_id=1, no_id=2)
  expected = np.exp([2.0, -1.0]) / (np.exp([2.0, -1.0]) + np.exp([1.0, 3.0]))
  np.testing.assert_allclose(p, expected, rtol=1e-12)
  # large logits do not overflow
  assert metrics.yes_probability(np.array([[1e4, -1e4]]), 0, 1)[0] == 1.0


def test_jsd_properties():
  rng = np.random.default_rng(2)
  p, q = _random_probs(rng, 50, 20, sparse=True), _random_probs(rng, 50, 20)
  assert metrics.jsd(p, q) == pytest.approx(metrics.jsd(q, p), abs=1e-14)
  assert metrics.jsd(p, p) == pytest.approx(0.0, abs=1e-15)
  assert 0 < metrics.jsd(p, q) <= math.log(2)
  a, b = np.array([[0.5, 0.5, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.3, 0.7]])
  assert metrics.jsd(a, b) == pytest.approx(math.log(2), abs=1e-12)  # disjoint supports
  # against the definition, row by row
  m = (p + q) / 2
  kl = lambda x, y: np.where(x > 0, x * np.log(np.where(x > 0, x, 1) / y), 0).sum(-1)  # noqa: E731
  assert metrics.jsd(p, q) == pytest.approx(np.mean(0.5 * kl(p, m) + 0.5 * kl(q, m)), rel=1e-12)


def test_sym_kl_and_l2():
  rng = np.random.default_rng(3)
  p, q = _random_probs(rng, 40, 15), _random_probs(rng, 40, 15, sparse=True)
  eps = 1e-12
  expected = np.mean(0.5 * (p * np.log((p + eps) / (q + eps))).sum(-1)
                     + 0.5 * (q * np.log((q + eps) / (p + eps))).sum(-1))
  assert metrics.sym_kl(p, q) == pytest.approx(expected, rel=1e-12)
  assert metrics.sym_kl(p, q) == pytest.approx(metrics.sym_kl(q, p), rel=1e-12)
  assert metrics.sym_kl(p, p) == 0.0
  # L2 hand case: rows (1,0) vs (0,1) -> sqrt 2; equal rows -> 0; mean over rows
  a = np.array([[1.0, 0.0], [0.3, 0.7]])
  b = np.array([[0.0, 1.0], [0.3, 0.7]])
  assert metrics.l2(a, b) == pytest.approx(math.sqrt(2) / 2)


def test_distances_from_logits_and_chunking():
  rng = np.random.default_rng(4)
  la = rng.normal(scale=3, size=(37, 64)).astype(np.float32)
  lb = rng.normal(scale=3, size=(37, 64)).astype(np.float32)
  full = metrics.distances_from_logits(la, lb, yes_id=5, no_id=9, chunk_rows=1000)
  chunked = metrics.distances_from_logits(la, lb, yes_id=5, no_id=9, chunk_rows=4)
  assert set(full) == {'jsd', 'sym_kl', 'l2', 'jsd_yesno', 'sym_kl_yesno', 'l2_yesno'}
  for k in full:
    assert chunked[k] == pytest.approx(full[k], rel=1e-12)
  pa, pb = metrics.softmax(la), metrics.softmax(lb)
  assert full['jsd'] == pytest.approx(metrics.jsd(pa, pb), rel=1e-12)
  assert full['sym_kl'] == pytest.approx(metrics.sym_kl(pa, pb), rel=1e-12)
  assert full['l2'] == pytest.approx(metrics.l2(pa, pb), rel=1e-12)
  assert metrics.jsd(pa, pb, chunk_rows=3) == pytest.approx(full['jsd'], rel=1e-12)
  pair_a, pair_b = metrics.softmax(la[:, [5, 9]]), metrics.softmax(lb[:, [5, 9]])
  assert full['jsd_yesno'] == pytest.approx(metrics.jsd(pair_a, pair_b), rel=1e-12)
  assert full['l2_yesno'] == pytest.approx(metrics.l2(pair_a, pair_b), rel=1e-12)
  # Yes/No probability from the pair equals yes_probability
  np.testing.assert_allclose(pair_a[:, 0], metrics.yes_probability(la, 5, 9), rtol=1e-12)
  assert set(metrics.distances_from_logits(la, lb)) == {'jsd', 'sym_kl', 'l2'}
  with pytest.raises(ValueError):
    metrics.jsd(pa, pb[:5])


def test_mia():
  members = np.array([0.1, 0.2, 0.3])
  nonmembers = np.array([0.5, 0.6])
  assert metrics.mia_auc(members, nonmembers) == 1.0  # low loss = member, perfectly separable
  assert metrics.mia_auc(nonmembers, members) == 0.0
  assert metrics.mia_auc([0.4, 0.4], [0.4, 0.4]) == 0.5  # indistinguishable: forgotten
  rng = np.random.default_rng(5)
  f, n = rng.normal(size=30), rng.normal(size=40)
  y = np.r_[np.ones(30), np.zeros(40)]
  assert metrics.mia_auc(f, n) == pytest.approx(roc_auc_score(y, -np.r_[f, n]))
  fr, nr = rng.normal(size=30), rng.normal(size=40)
  assert metrics.mia_ref_auc(f, fr, n, nr) == pytest.approx(roc_auc_score(y, -np.r_[f - fr, n - nr]))
  # the reference attack sees through per-sample difficulty the loss attack cannot
  difficulty = np.r_[np.full(30, 2.0), np.zeros(40)]
  ref = difficulty + rng.normal(scale=0.01, size=70)
  attacked = ref - np.r_[np.full(30, 0.5), np.zeros(40)]  # memorised the forget set a little
  assert metrics.mia_auc(attacked[:30], attacked[30:]) == 0.0
  assert metrics.mia_ref_auc(attacked[:30], ref[:30], attacked[30:], ref[30:]) == 1.0

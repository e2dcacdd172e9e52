"""Evaluation metrics: recommendation quality, distance to the retrained model, MIA.

Plain numpy in float64, so the numbers do not depend on the device that produced the
logits: the model's `[N, vocab]` logits (often fp32 or bf16) are copied to the host
and cast chunk by chunk. Distances over a 32k vocabulary are computed in row chunks
(`chunk_rows`; default about 4M elements per chunk) so N x V never exists in float64.

Conventions (chosen to match the paper's code, `evaluate.py` of justarter/E2URec):
- P(Yes) is the softmax over the two first-answer-token logits (Yes, No);
- ACC predicts Yes when P(Yes) > threshold (strictly);
- `auc` returns NaN (not an error) when only one class is present, so a tiny forget
  set in a demo run leaves a hole in the report instead of killing the run;
- distances are computed row-wise and averaged over rows.
"""
import math

import numpy as np

from e2urec_jax import scoring
from e2urec_jax.scoring import auc, binary_labels, log_softmax, softmax  # noqa: F401  (re-exported)

LN2 = math.log(2.0)
SYM_KL_EPS = 1e-12  # the paper's code adds 1e-12 to both probabilities in its "JSD"
_CHUNK_ELEMENTS = 1 << 22  # float64 elements per chunk: 32 MiB per temporary


def yes_probability(first_logits, yes_id, no_id):
  """P(Yes) from the first answer position: softmax over the (Yes, No) logits.  # [N]"""
  first_logits = np.asarray(first_logits)  # [N, vocab]
  yes = first_logits[:, yes_id].astype(np.float64)
  no = first_logits[:, no_id].astype(np.float64)
  return 1.0 / (1.0 + np.exp(no - yes))  # = softmax([yes, no])[0], stable for large gaps


def logloss(labels, p, eps=1e-7):
  """Binary log loss of P(positive), probabilities clipped to [eps, 1 - eps]."""
  y = binary_labels(labels).astype(np.float64)
  p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), eps, 1.0 - eps)
  return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def accuracy(labels, p, threshold=0.5):
  """Share of samples where (P(positive) > threshold) equals the label."""
  y = binary_labels(labels)
  pred = (np.asarray(p, dtype=np.float64).reshape(-1) > threshold).astype(np.int64)
  return float(np.mean(pred == y))


def binary_metrics(labels, p):
  """{'auc', 'logloss', 'acc'} of P(Yes) against 0/1 labels: one report cell group."""
  return {'auc': auc(labels, p), 'logloss': logloss(labels, p), 'acc': accuracy(labels, p)}


# Row-wise distances between distributions. -----------------------------------------

def _chunks(n, width, chunk_rows):
  rows = chunk_rows or max(1, _CHUNK_ELEMENTS // max(1, width))
  for start in range(0, n, rows):
    yield slice(start, min(n, start + rows))


def _xlogy_ratio(a, b):
  """a * log(a / b) with 0 * log(0 / .) = 0.  # elementwise"""
  with np.errstate(divide='ignore', invalid='ignore'):
    out = a * (np.log(a) - np.log(b))
  return np.where(a > 0, out, 0.0)


def _row_jsd(p, q):
  m = 0.5 * (p + q)
  value = 0.5 * _xlogy_ratio(p, m).sum(-1) + 0.5 * _xlogy_ratio(q, m).sum(-1)
  return np.clip(value, 0.0, LN2)  # [rows]


def _row_sym_kl(p, q, eps):
  log_p, log_q = np.log(p + eps), np.log(q + eps)
  return 0.5 * (p * (log_p - log_q)).sum(-1) + 0.5 * (q * (log_q - log_p)).sum(-1)  # [rows]


def _row_l2(p, q):
  return np.sqrt(np.sum((p - q) ** 2, axis=-1))  # [rows]


def _rowwise_mean(row_fn, a, b, chunk_rows, to_probs, axis=None):
  """Mean over rows of row_fn(to_probs(a rows), to_probs(b rows)), one row chunk at a time.

  `axis=-1` sums only the last (row) axis, for a row_fn that returns several values per row.
  """
  a, b = np.asarray(a), np.asarray(b)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f'expected two [N, V] arrays of the same shape, got {a.shape} and {b.shape}')
  if a.shape[0] == 0:
    return float('nan')
  total = 0.0
  for rows in _chunks(a.shape[0], a.shape[1], chunk_rows):
    total = total + np.sum(row_fn(to_probs(a[rows]), to_probs(b[rows])), axis=axis)
  return total / a.shape[0] if axis is not None else float(total) / a.shape[0]


def _as_f64(x):
  return np.asarray(x, dtype=np.float64)


def jsd(p, q, chunk_rows=None):
  """True Jensen-Shannon divergence (natural log: 0 <= JSD <= ln 2), mean over rows.

  p, q: `[N, V]` probability rows.
  """
  return _rowwise_mean(_row_jsd, p, q, chunk_rows, _as_f64)


def sym_kl(p, q, eps=SYM_KL_EPS, chunk_rows=None):
  """0.5 KL(p||q) + 0.5 KL(q||p), mean over rows: the quantity the paper's code calls "JSD".

  Computed as the paper's code does, 0.5 sum p log((p+eps)/(q+eps)) + the mirror term,
  so zero probabilities give a large finite value instead of inf.
  """
  return _rowwise_mean(lambda a, b: _row_sym_kl(a, b, eps), p, q, chunk_rows, _as_f64)


def l2(p, q, chunk_rows=None):
  """Euclidean distance between probability rows, mean over rows."""
  return _rowwise_mean(_row_l2, p, q, chunk_rows, _as_f64)


def distances_from_logits(logits_a, logits_b, yes_id=None, no_id=None, chunk_rows=None):
  """Distances between the distributions two models give at the same positions.

  logits `[N, V]` (e.g. the first answer position of the forget set: the unlearned
  model against the retrained one). Returns {'jsd', 'sym_kl', 'l2'} over the full
  vocabulary, plus {'jsd_yesno', 'sym_kl_yesno', 'l2_yesno'} over the renormalised
  (Yes, No) pair when both ids are given. Softmax happens per chunk, in float64.
  """
  def all_three(p, q):  # one softmax per chunk for the three distances
    return np.stack([_row_jsd(p, q), _row_sym_kl(p, q, SYM_KL_EPS), _row_l2(p, q)])  # [3, rows]

  means = _rowwise_mean(all_three, logits_a, logits_b, chunk_rows, softmax, axis=-1)  # [3]
  means = np.broadcast_to(means, (3,))  # N = 0 gives one NaN for all three
  out = {'jsd': float(means[0]), 'sym_kl': float(means[1]), 'l2': float(means[2])}
  if yes_id is not None and no_id is not None:
    pair_a = np.asarray(logits_a)[:, [yes_id, no_id]]  # [N, 2]
    pair_b = np.asarray(logits_b)[:, [yes_id, no_id]]
    pa, pb = softmax(pair_a), softmax(pair_b)
    out['jsd_yesno'] = jsd(pa, pb)
    out['sym_kl_yesno'] = sym_kl(pa, pb)
    out['l2_yesno'] = l2(pa, pb)
  return out


# Membership inference. ----------------------------------------------------------------

def mia_auc(forget_losses, nonmember_losses):
  """Loss attack: AUC of telling forget-set samples (members) from non-members.

  Score = -loss (members of the training set have low loss). 0.5 means the attacker
  cannot tell them apart: the forget set looks unseen. Non-members are test samples of
  users outside the forget set.
  """
  return scoring.membership_auc(forget_losses, nonmember_losses)


def mia_ref_auc(forget_losses, forget_ref_losses, nonmember_losses, nonmember_ref_losses):
  """Reference-model attack: score = -(loss - ref_loss), ref = the retrained model.

  Calibrating by a model that never saw the forget set removes per-sample difficulty,
  so what remains is what the attacked model memorised.
  """
  f = np.asarray(forget_losses, np.float64).reshape(-1) - np.asarray(forget_ref_losses, np.float64).reshape(-1)
  n = (np.asarray(nonmember_losses, np.float64).reshape(-1)
       - np.asarray(nonmember_ref_losses, np.float64).reshape(-1))
  return mia_auc(f, n)


# Ranking: one relevant item among sampled negatives (eval/ranking.py). ---------------------------

def positive_ranks(scores):
  """1-based rank of each row's positive (column 0) among its candidates, higher score first.

  scores `[P, C]`: column 0 the positive, columns 1.. its negatives; NaN marks a missing
  negative (a user who rated nearly every item) and takes no place. Ties are broken
  pessimistically: the positive ranks below every negative scored equal to it, so a model
  that scores every candidate alike ranks its positive last, never first. A NaN positive
  ranks last.  # [P] int
  """
  s = np.asarray(scores, dtype=np.float64)
  if s.ndim != 2 or s.shape[1] < 1:
    raise ValueError(f'expected [positives, candidates] scores, got shape {s.shape}')
  positive, negatives = s[:, :1], s[:, 1:]
  present = ~np.isnan(negatives)
  above = np.where(np.isnan(positive), present, present & (negatives >= positive))
  return 1 + above.sum(axis=1).astype(np.int64)


def hit_rate(ranks, k):
  """HR@k: the share of positives ranked in the top k (NaN for no positives)."""
  r = np.asarray(ranks).reshape(-1)
  return float(np.mean(r <= int(k))) if r.size else float('nan')


def ndcg(ranks, k):
  """NDCG@k with one relevant item per list (IDCG = 1): mean of 1/log2(rank + 1) over positives,
  0 for a rank beyond k (NaN for no positives)."""
  r = np.asarray(ranks, dtype=np.float64).reshape(-1)
  if not r.size:
    return float('nan')
  return float(np.mean(np.where(r <= int(k), 1.0 / np.log2(r + 1.0), 0.0)))

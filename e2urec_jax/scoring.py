"""Numpy statistics every layer uses: softmax, rank AUC, the membership AUC of a loss attack, the
per-sample answer loss. Float64 on the host, so a number does not depend on the device that
produced the logits. Evaluation (eval/metrics.py) re-exports them; training reads them for the
retrain-free stop (train/heldout.py).
"""
import numpy as np


def log_softmax(logits, axis=-1):
  x = np.asarray(logits, dtype=np.float64)
  x = x - np.max(x, axis=axis, keepdims=True)
  return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def softmax(logits, axis=-1):
  """Numerically stable softmax in float64."""
  x = np.asarray(logits, dtype=np.float64)
  x = x - np.max(x, axis=axis, keepdims=True)
  e = np.exp(x)
  return e / np.sum(e, axis=axis, keepdims=True)


def per_example_loss(logits, labels, mask) -> np.ndarray:
  """Mean answer-token CE per sample, [batch]: logits [batch, answer, vocab], labels and mask [batch, answer]."""
  logp = np.take_along_axis(log_softmax(np.asarray(logits, np.float64)), labels[..., None], axis=-1)[..., 0]
  return -(logp * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


def binary_labels(labels):
  y = np.asarray(labels).reshape(-1)
  if y.dtype == bool:
    return y.astype(np.int64)
  if not np.all((y == 0) | (y == 1)):
    raise ValueError('labels must be 0/1 (drop padding rows, label -1, before scoring)')
  return y.astype(np.int64)


def _average_ranks(scores):
  """1-based ranks, ties given the mean of the ranks they span."""
  _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)  # last rank of each distinct value
  return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def auc(labels, scores):
  """ROC AUC by the Mann-Whitney U statistic with tied scores counted half.

  Equal to sklearn's roc_auc_score. NaN when labels hold only one class.
  """
  y = binary_labels(labels)
  s = np.asarray(scores, dtype=np.float64).reshape(-1)
  if s.shape != y.shape:
    raise ValueError(f'labels {y.shape} and scores {s.shape} differ in length')
  if np.isnan(s).any():
    raise ValueError('scores contain NaN')
  n_pos = int(y.sum())
  n_neg = y.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = _average_ranks(s)
  u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def membership_auc(member_losses, other_losses) -> float:
  """AUC of telling members from others by score = -loss (a model's training samples have low loss)."""
  f = np.asarray(member_losses, dtype=np.float64).reshape(-1)
  n = np.asarray(other_losses, dtype=np.float64).reshape(-1)
  labels = np.concatenate([np.ones(f.size, np.int64), np.zeros(n.size, np.int64)])
  return auc(labels, -np.concatenate([f, n]))

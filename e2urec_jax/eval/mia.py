"""Membership-inference attacks fit for an LLM recommender whose answer is 2-3 tokens.

Each attack turns a model's outputs on one sample into a membership score (higher = "was
trained on"), and its AUC over members (the forget set) against non-members says how well
an attacker tells them apart. The target is not 0.5: forget users differ from other users,
so the retrained model's own AUC is what "forgotten" looks like, and the report puts every
method's value beside it.

- loss: -(mean answer-token cross entropy) (Yeom et al. 2018);
- confidence: the probability of the true first answer token (Salem et al. 2019);
- entropy: -(entropy of the Yes/No prediction) (Salem et al.; members get sharper answers);
- modified entropy: -Mentr(p, y) = (1 - p_y) log p_y + sum_{i != y} p_i log(1 - p_i) over the
  Yes/No prediction (Song & Mittal 2021), which, unlike entropy, also uses the label;
- reference: -(loss - loss under a reference model trained without the targets) (Carlini et
  al. 2022's calibration, one reference): removes each sample's own difficulty.
Min-K% and zlib attacks score long generated texts; a 2-3 token answer gives them nothing to
work with, so they are not here.
"""
import numpy as np

from e2urec_jax.eval import metrics

ATTACKS = ('loss', 'confidence', 'entropy', 'modified_entropy', 'reference')


def _yes_no_probs(first_logits, labels, yes_id, no_id):
  """P(true answer), P(other answer) from the renormalised Yes/No logits.  # [N], [N]"""
  p_yes = metrics.yes_probability(first_logits, yes_id, no_id)
  p_true = np.where(np.asarray(labels) == 1, p_yes, 1.0 - p_yes)
  return p_true, 1.0 - p_true


def scores(attack: str, *, first_logits=None, labels=None, loss=None, ref_loss=None, yes_id=None,
           no_id=None, eps: float = 1e-12) -> np.ndarray:
  """Membership scores of one attack (higher = member).  # [N]

  first_logits [N, V] at the first answer position, labels [N] (1 = Yes), loss [N] per-sample
  answer CE, ref_loss [N] the same under the reference model."""
  if attack not in ATTACKS:
    raise ValueError(f'unknown attack {attack!r}; one of {", ".join(ATTACKS)}')
  if attack == 'loss':
    return -np.asarray(loss, np.float64)
  if attack == 'reference':
    return -(np.asarray(loss, np.float64) - np.asarray(ref_loss, np.float64))
  if attack == 'confidence':
    probs = metrics.softmax(first_logits)
    true_token = np.where(np.asarray(labels) == 1, yes_id, no_id)
    return probs[np.arange(len(true_token)), true_token]
  p_true, p_other = _yes_no_probs(first_logits, labels, yes_id, no_id)
  p_true, p_other = np.clip(p_true, eps, 1 - eps), np.clip(p_other, eps, 1 - eps)
  if attack == 'entropy':
    return p_true * np.log(p_true) + p_other * np.log(p_other)
  return (1 - p_true) * np.log(p_true) + p_other * np.log(1 - p_other)  # modified entropy


def attack_auc(member_scores, nonmember_scores) -> float:
  """AUC of telling members (label 1) from non-members by the score."""
  m = np.asarray(member_scores, np.float64).reshape(-1)
  n = np.asarray(nonmember_scores, np.float64).reshape(-1)
  return metrics.auc(np.concatenate([np.ones(m.size, np.int64), np.zeros(n.size, np.int64)]), np.concatenate([m, n]))


def sample_scores(*, first_logits, labels, loss, yes_id: int, no_id: int, ref_loss=None) -> dict:
  """attack -> membership scores [N] of every attack whose inputs are given (the reference
  attack only with ref_loss). Evaluation calls it per batch, so no [N, V] logits are kept."""
  inputs = {'first_logits': first_logits, 'labels': labels, 'loss': loss, 'ref_loss': ref_loss}
  return {attack: scores(attack, yes_id=yes_id, no_id=no_id, **inputs) for attack in ATTACKS
          if attack != 'reference' or ref_loss is not None}


def aucs(member_scores: dict, nonmember_scores: dict) -> dict:
  """attack -> AUC for every attack scored on both sides (scores from `sample_scores`); an
  attack missing on either side (no reference model) maps to None."""
  return {attack: (attack_auc(member_scores[attack], nonmember_scores[attack])
                   if attack in member_scores and attack in nonmember_scores else None) for attack in ATTACKS}


def suite(members: dict, nonmembers: dict, *, yes_id: int, no_id: int) -> dict:
  """AUC of every attack whose inputs are present. `members` / `nonmembers`: dicts with
  'first_logits', 'labels', 'loss' and optionally 'ref_loss' (then the reference attack runs)."""
  out = {}
  for attack in ATTACKS:
    if attack == 'reference' and (members.get('ref_loss') is None or nonmembers.get('ref_loss') is None):
      continue
    out[attack] = attack_auc(scores(attack, yes_id=yes_id, no_id=no_id, **members),
                             scores(attack, yes_id=yes_id, no_id=no_id, **nonmembers))
  return out

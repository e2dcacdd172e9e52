"""One model's scores on a set of rows: what the evaluation, the trajectories, `predict`, the forget
audit and `sequence` all read of a model (P(Yes), the per-sample loss, the membership attacks'
scores, and on request the first-answer-position logits).
"""
import numpy as np
from tqdm.auto import tqdm

from e2urec_jax.eval import metrics, mia
from e2urec_jax.scoring import per_example_loss
from e2urec_jax.train.inference import iterate_eval


def score(ctx, predictor, split: str, indices: np.ndarray, keep_logits: bool = False, desc: str = '') -> dict:
  """p_yes [N], loss [N], 'mia': {attack: membership score [N]} (eval/mia.py, every attack but the
  reference one) and, if asked, the first-answer-position logits [N, V] of one model on a set."""
  p_yes, loss, first, attacks = [], [], [], []
  yes, no = ctx.data.yes_id, ctx.data.no_id
  chunks = iterate_eval(ctx, split, indices, with_host=True)
  for device, host, real in tqdm(chunks, desc=desc or split, leave=False, disable=not ctx.config.progress,
                                 total=-(-len(indices) // max(ctx.num_devices, ctx.config.eval.batch_size))):
    logits = predictor.logits(device)[:real]  # [batch, answer, vocab]
    p_yes.append(metrics.yes_probability(logits[:, 0], yes, no))
    loss.append(per_example_loss(logits, host['answer_labels'][:real], host['answer_mask'][:real]))
    attacks.append(mia.sample_scores(first_logits=logits[:, 0], labels=host['label'][:real], loss=loss[-1],
                                     yes_id=yes, no_id=no))
    if keep_logits:
      first.append(logits[:, 0])
  out = {'p_yes': np.concatenate(p_yes), 'loss': np.concatenate(loss),
         'mia': {k: np.concatenate([a[k] for a in attacks]) for k in (attacks[0] if attacks else ())}}
  if keep_logits:
    out['first_logits'] = np.concatenate(first)
  return out

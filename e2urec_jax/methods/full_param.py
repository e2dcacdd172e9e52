"""What the full-parameter baselines share: a copy of the original is trained on one retain and one
forget batch per step (a single forward over both), and their usual config fields.

NegGrad, Bad-T and GA differ only in how they weigh the two cross-entropies (and, for Bad-T,
in flipped answers on the forget set); NPO adds a frozen reference model.
"""
from e2urec_jax import rules
from e2urec_jax.methods import common


def retain_forget_ce(model, params, batch, rng):
  """(logits [2B, answer, vocab], retain CE, forget CE) of one forward over [retain; forget]."""
  from e2urec_jax import losses  # no JAX in config
  from e2urec_jax.models import answer_logits  # no JAX in config
  retain, forget = batch['retain'], batch['forget']
  n = retain['label'].shape[0]
  logits = answer_logits(model, params, common.concat_batches(retain, forget), dropout_rng=rng)
  ce_r = losses.answer_cross_entropy(logits[:n], retain['answer_labels'], retain['answer_mask'])
  ce_f = losses.answer_cross_entropy(logits[n:], forget['answer_labels'], forget['answer_mask'])
  return logits, ce_r, ce_f


def paired_batches(ctx, section, seed_of):
  """MethodSpec.batches: section.batch_size retain and forget samples a step."""
  return common.paired_batches(ctx, section.batch_size, seed_of)


def flipped_batches(ctx, section, seed_of):
  """MethodSpec.batches with the forget set's answers flipped (Bad-T)."""
  return common.paired_batches(ctx, section.batch_size, seed_of, flip_forget=True)


def constant_hparams(*fields):
  """MethodSpec.hparams: the given fields of the method's section, the same at every step."""
  def hparams(ctx, section):
    values = {f: section[f] for f in fields}
    return lambda step: values
  return hparams


WEIGHT_RULE = {'weight': rules.FINITE}

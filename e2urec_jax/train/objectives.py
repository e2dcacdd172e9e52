"""The training objective every recipe shares: the model being trained, forwarded, and the CE on its
answer tokens. The LLMRec recipe (methods/llmrec.py), E2URec's augmented model and the relearning
check (eval/relearn.py) compile this one step (RunContext.train_step keys it by this function).

Imported at start-up by the method modules (before JAX loads): JAX is imported where it is used.
"""


def student_logits(model, kind, trainable, frozen, batch, rng):
  """[batch, answer, vocab] logits of the model being trained (kind 'full': the weights are
  `trainable`; 'lora': adapters `trainable` on the base `frozen['base']`)."""
  from e2urec_jax.models import answer_logits  # no JAX in config
  if kind == 'full':
    return answer_logits(model, trainable, batch, dropout_rng=rng)
  return answer_logits(model, frozen['base'], batch, adapters=trainable, dropout_rng=rng)


def ce_loss_fn(model, kind):
  """CE on the answer tokens of the batch (kind: what is trained, 'full' or 'lora')."""
  from e2urec_jax import losses  # no JAX in config

  def loss_fn(trainable, frozen, batch, rng, hp):
    logits = student_logits(model, kind, trainable, frozen, batch, rng)
    return losses.answer_cross_entropy(logits, batch['answer_labels'], batch['answer_mask']), {}
  return loss_fn

"""Loss terms of E2URec and its baselines: pure functions of answer logits.

Every function casts its inputs to float32 first: models may run in bf16 on GPU/TPU,
but a softmax over a 32k vocabulary and a sum of small log-probabilities lose too
much in bf16, and the unlearning signal (a difference of two such sums) is small.

Shapes: logits `[batch, answer, vocab]` at the answer positions (see
`models.answer_logits`), labels `[batch, answer]` int, masks `[batch, answer]` float
(1 = a real answer token; 0 = padding, including whole padding rows a batch gets
to fill the device count). Masked positions never contribute, and may hold any label
id (e.g. -100 or pad): they are replaced before the gather so they cannot produce NaN.

A mean over zero unmasked positions is 0 (not NaN as in PyTorch), so an all-padding
batch on one host of a data-parallel run cannot poison the step.
"""
import jax
import jax.numpy as jnp


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _masked_mean(values, mask):
  """Mean of `values` over positions where mask > 0 (0 if there are none)."""
  if mask is None:
    return jnp.mean(values)
  mask = _f32(mask)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def token_log_probs(logits, labels, mask):
  """Log-probability of each label token; 0 at masked positions.  # [batch, answer]"""
  logits = _f32(logits)  # [batch, answer, vocab]
  mask = _f32(mask)  # [batch, answer]
  safe_labels = jnp.where(mask > 0, labels, 0).astype(jnp.int32)  # [batch, answer]
  log_probs = jax.nn.log_softmax(logits, axis=-1)  # [batch, answer, vocab]
  picked = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  return jnp.where(mask > 0, picked, 0.0)  # [batch, answer]


def answer_cross_entropy(logits, labels, mask, *, per_example=False):
  """Cross entropy of the answer tokens.

  Default: the mean over all unmasked tokens of the batch (a scalar), which is what
  HF's T5 loss with -100 ignored labels computes. `per_example=True` gives the mean
  over each row's own unmasked tokens (`[batch]`, 0 for padding rows): the per-sample
  loss that membership-inference attacks score.
  """
  nll = -token_log_probs(logits, labels, mask)  # [batch, answer]
  mask = _f32(mask)
  if per_example:
    return jnp.sum(nll, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)  # [batch]
  return jnp.sum(nll) / jnp.maximum(jnp.sum(mask), 1.0)


def answer_log_likelihood(logits, labels, mask):
  """Sum of the answer tokens' log-probabilities per example (`[batch]`), as NPO needs."""
  return jnp.sum(token_log_probs(logits, labels, mask), axis=-1)  # [batch]


def distillation_loss(teacher_logits, student_logits, mask=None):
  """KD(teacher -> student) = mean over unmasked positions of -sum_v p_t log p_s.

  The cross-entropy form of the original code (equal to KL up to the teacher's
  entropy, which has no gradient). The teacher sits behind `stop_gradient`, so a
  teacher computed in the same traced function never receives gradients.
  """
  teacher = jax.lax.stop_gradient(_f32(teacher_logits))  # [batch, answer, vocab]
  student = _f32(student_logits)  # [batch, answer, vocab]
  teacher_probs = jax.nn.softmax(teacher, axis=-1)
  student_log_probs = jax.nn.log_softmax(student, axis=-1)
  per_position = -jnp.sum(teacher_probs * student_log_probs, axis=-1)  # [batch, answer]
  return _masked_mean(per_position, mask)


def forgetting_teacher_logits(orig_logits, aug_logits, alpha):
  """The forgetting teacher: orig - alpha * relu(aug - orig).

  Wherever fine-tuning on the forget set raised a logit (what the augmented model
  learnt from D_f), push it down by alpha times that rise; elsewhere keep the original.
  """
  orig = _f32(orig_logits)
  aug = _f32(aug_logits)
  return orig - _f32(alpha) * jax.nn.relu(aug - orig)


def neggrad_loss(retain_ce, forget_ce, weight=0.2):
  """NegGrad as the original code: descend on retain CE, ascend on forget CE."""
  return retain_ce - weight * forget_ce


def badt_loss(retain_ce, flipped_forget_ce, weight=0.2):
  """Bad-T as the original code: CE on retain plus CE towards the flipped forget answers."""
  return retain_ce + weight * flipped_forget_ce


def ga_loss(forget_ce):
  """Pure gradient ascent on the forget set."""
  return -forget_ce


def npo_loss(student_logp, ref_logp, beta=0.1, example_mask=None):
  """Negative Preference Optimization (Zhang et al. 2024), the forget term.

  -(2/beta) * mean(log_sigmoid(-beta * (log pi(y|x) - log pi_ref(y|x)))) over the
  forget examples, `[batch]` log-likelihoods from `answer_log_likelihood`; the
  reference (the original model) gets no gradient. `example_mask` `[batch]` drops
  padding rows, whose log-ratio 0 would otherwise add a constant -log(1/2) term.
  """
  student_logp = _f32(student_logp)  # [batch]
  ref_logp = jax.lax.stop_gradient(_f32(ref_logp))  # [batch]
  log_ratio = student_logp - ref_logp
  per_example = jax.nn.log_sigmoid(-beta * log_ratio)  # [batch]
  return -(2.0 / beta) * _masked_mean(per_example, example_mask)


def e2urec_loss(student_retain, student_forget, orig_retain, orig_forget, aug_forget,
                retain_labels, retain_mask, forget_mask, *, w, alpha, forget_only,
                use_forget_teacher=True, use_remember_teacher=True):
  """The E2URec objective on one (retain batch, forget batch) pair.

  L = w * (CE(retain) + KD(orig_retain -> student_retain))
      + (1 - w) * KD(forgetting_teacher -> student_forget),
  and during the warm-up (`forget_only`) just KD(forgetting_teacher -> student_forget),
  as the original code's forget-only epoch. `forget_only` may be a traced bool/float:
  it only weights the terms, so one compiled step serves both phases (all terms are
  always computed; their retain terms get weight 0 in the warm-up). `w` and `alpha`
  may be traced too. The two `use_*` flags are static (Python bools) for the ablations:
  without the forgetting teacher the forget set is distilled from the original model
  (`aug_forget` may then be None); without the remembering teacher the retain KD term
  is dropped (`orig_retain` may then be None).

  Returns (loss, aux) with aux = retain_ce, retain_kd, forget_kd, loss (fp32 scalars).
  """
  warmup = _f32(forget_only)
  w = _f32(w)
  retain_ce = answer_cross_entropy(student_retain, retain_labels, retain_mask)
  if use_remember_teacher:
    retain_kd = distillation_loss(orig_retain, student_retain, retain_mask)
  else:
    retain_kd = jnp.zeros((), jnp.float32)
  if use_forget_teacher:
    forget_teacher = forgetting_teacher_logits(orig_forget, aug_forget, alpha)  # [batch, answer, vocab]
  else:
    forget_teacher = _f32(orig_forget)
  forget_kd = distillation_loss(forget_teacher, student_forget, forget_mask)
  retain_weight = w * (1.0 - warmup)
  forget_weight = (1.0 - w) * (1.0 - warmup) + warmup
  loss = retain_weight * (retain_ce + retain_kd) + forget_weight * forget_kd
  aux = {'loss': loss, 'retain_ce': retain_ce, 'retain_kd': retain_kd, 'forget_kd': forget_kd}
  return loss, aux

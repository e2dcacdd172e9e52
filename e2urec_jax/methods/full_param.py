"""Full-parameter unlearning baselines on one retain + one forget batch per step.

NegGrad, Bad-T and GA are the same computation with other coefficients (and, for Bad-T,
flipped answers in the data), so they share one compiled step; NPO adds a frozen reference.
"""
import jax

from e2urec_jax import losses
from e2urec_jax.methods import common
from e2urec_jax.methods.original import ensure_original
from e2urec_jax.train import artifacts, sampling, steps
from e2urec_jax.train.loop import run_phase


def _retain_forget_ce(model, params, batch, rng):
  from e2urec_jax.models import answer_logits
  retain, forget = batch['retain'], batch['forget']
  n = retain['label'].shape[0]
  logits = answer_logits(model, params, common.concat_batches(retain, forget), dropout_rng=rng)
  ce_r = losses.answer_cross_entropy(logits[:n], retain['answer_labels'], retain['answer_mask'])
  ce_f = losses.answer_cross_entropy(logits[n:], forget['answer_labels'], forget['answer_mask'])
  return logits, ce_r, ce_f


def ascent_loss_fn(model):
  """retain_coef * CE(D_r) - ascent_weight * CE(D_f): NegGrad (1, w), Bad-T (1, -w, flipped), GA (0, 1)."""
  def loss_fn(params, frozen, batch, rng, hp):
    _, ce_r, ce_f = _retain_forget_ce(model, params, batch, rng)
    loss = losses.neggrad_loss(hp['retain_coef'] * ce_r, ce_f, hp['ascent_weight'])
    return loss, {'retain_ce': ce_r, 'forget_ce': ce_f}
  return loss_fn


def npo_loss_fn(model):
  from e2urec_jax.models import answer_logits

  def loss_fn(params, frozen, batch, rng, hp):
    logits, ce_r, _ = _retain_forget_ce(model, params, batch, rng)
    forget = batch['forget']
    n = batch['retain']['label'].shape[0]
    ref = jax.lax.stop_gradient(answer_logits(model, frozen['ref'], forget))
    labels, mask = forget['answer_labels'], forget['answer_mask']
    npo = losses.npo_loss(losses.answer_log_likelihood(logits[n:], labels, mask),
                          losses.answer_log_likelihood(ref, labels, mask), hp['beta'],
                          example_mask=mask.sum(axis=-1) > 0)
    return npo + hp['retain_weight'] * ce_r, {'retain_ce': ce_r, 'npo': npo}
  return loss_fn


def run_full_param(ctx, name: str, cfg, *, kind: str, extra_hp: dict, flip_forget: bool = False,
                   seed: int | None = None) -> dict:
  """Trains every weight of a copy of the original with `kind` ('ascent' or 'npo') and saves it."""
  ensure_original(ctx)
  stats = common.done(ctx, name)
  if stats is not None:
    return stats
  seed = ctx.config.seed if seed is None else seed
  original = ctx.load_params('original')
  retain, forget = common.split_indices(ctx.data)
  frozen = {'ref': ctx.put(ctx.base_dtype(original))} if kind == 'npo' else {}
  build = {'ascent': ascent_loss_fn, 'npo': npo_loss_fn}[kind]
  step_fn = ctx.compiled(('full_param', kind), lambda: steps.make_train_step(build(ctx.model), ctx.mesh))
  batch_size = cfg.batch_size

  def batch_for_step(step):
    return common.paired_batch(ctx.data, sampling.batch_indices(retain, batch_size, seed, step),
                               sampling.batch_indices(forget, batch_size, seed + 1, step), flip_forget=flip_forget)

  result = run_phase(
      name=name, phase_dir=ctx.phase_dir(name), config=ctx.config, step_fn=step_fn,
      trainable=ctx.put(original), opt_state=ctx.put(steps.init_opt_state(original)), frozen=frozen,
      batch_for_step=batch_for_step, hparams_for_step=common.hparams(cfg.learning_rate, **extra_hp),
      num_steps=cfg.steps, examples_per_step=2 * batch_size, mesh=ctx.mesh,
      base_sha256=ctx.base_sha256(ctx.model_dir('original')), seed=seed)
  size = artifacts.save_full(ctx.model, jax.device_get(result.trainable), ctx.model_dir(name))
  return common.finish(ctx, name, result, trainable_params=ctx.num_base_params, checkpoint_bytes=size,
                       extra={'seed': seed})

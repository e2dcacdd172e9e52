"""NPO (Zhang et al. 2024): negative preference optimisation against the frozen original, plus retain CE."""
from e2urec_jax import rules
from e2urec_jax.methods import full_param
from e2urec_jax.methods.spec import FrozenInputs, MethodSpec, register


def npo_loss_fn(model):
  import jax  # no JAX in config
  from e2urec_jax import losses  # no JAX in config
  from e2urec_jax.models import answer_logits  # no JAX in config

  def loss_fn(params, frozen, batch, rng, hp):
    logits, ce_r, _ = full_param.retain_forget_ce(model, params, batch, rng)
    forget = batch['forget']
    n = batch['retain']['label'].shape[0]
    ref = jax.lax.stop_gradient(answer_logits(model, frozen['ref'], forget))
    labels, mask = forget['answer_labels'], forget['answer_mask']
    npo = losses.npo_loss(losses.answer_log_likelihood(logits[n:], labels, mask),
                          losses.answer_log_likelihood(ref, labels, mask), hp['beta'],
                          example_mask=mask.sum(axis=-1) > 0)
    return npo + hp['retain_weight'] * ce_r, {'retain_ce': ce_r, 'npo': npo}
  return loss_fn


def reference_model(ctx, section, original) -> FrozenInputs:
  """The frozen original NPO's log-ratios are measured against."""
  return FrozenInputs({'ref': ctx.put(ctx.base_dtype(original))})


SPEC = register(MethodSpec(
    name='npo',
    summary='negative preference optimisation against the original + retain CE, full parameters',
    defaults={
        'learning_rate': 5e-5,  # AdamW rate.
        'steps': 1000,  # Steps in all.
        'batch_size': 16,  # Retain and forget samples per step, each.
        'beta': 0.1,  # NPO's inverse temperature.
        'retain_weight': 1.0,  # Weight of the retain CE.
    },
    rules={'beta': rules.POSITIVE, 'retain_weight': rules.NON_NEGATIVE}, trainable='full', loss=npo_loss_fn,
    batches=full_param.paired_batches, frozen=reference_model,
    hparams=full_param.constant_hparams('beta', 'retain_weight')))

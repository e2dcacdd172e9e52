"""NegGrad as in the E2URec code: retain CE - weight * forget CE on all parameters."""
from e2urec_jax.methods import full_param
from e2urec_jax.methods.spec import MethodSpec, register


def neggrad_loss_fn(model):
  from e2urec_jax import losses  # no JAX in config

  def loss_fn(params, frozen, batch, rng, hp):
    _, ce_r, ce_f = full_param.retain_forget_ce(model, params, batch, rng)
    return losses.neggrad_loss(ce_r, ce_f, hp['weight']), {'retain_ce': ce_r, 'forget_ce': ce_f}
  return loss_fn


SPEC = register(MethodSpec(
    name='neggrad',
    summary='retain CE - weight * forget CE, full parameters',
    defaults={
        'learning_rate': 5e-5,  # AdamW rate.
        'steps': 3000,  # Steps in all.
        'batch_size': 16,  # Retain and forget samples per step, each.
        'weight': 0.2,  # Weight of the ascent on the forget set.
    },
    rules=full_param.WEIGHT_RULE, trainable='full', loss=neggrad_loss_fn, batches=full_param.paired_batches,
    hparams=full_param.constant_hparams('weight')))

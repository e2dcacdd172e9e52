"""Bad-T as in the E2URec code: retain CE + weight * CE on the forget set with the answers flipped."""
from e2urec_jax.methods import full_param
from e2urec_jax.methods.spec import MethodSpec, register


def badt_loss_fn(model):
  from e2urec_jax import losses  # no JAX in config

  def loss_fn(params, frozen, batch, rng, hp):
    _, ce_r, ce_f = full_param.retain_forget_ce(model, params, batch, rng)  # forget answers flipped
    return losses.badt_loss(ce_r, ce_f, hp['weight']), {'retain_ce': ce_r, 'forget_ce': ce_f}
  return loss_fn


SPEC = register(MethodSpec(
    name='badt',
    summary='retain CE + weight * CE on the forget set with flipped answers, full parameters',
    defaults={
        'learning_rate': 5e-5,  # AdamW rate.
        'steps': 2400,  # Steps in all.
        'batch_size': 16,  # Retain and forget samples per step, each.
        'weight': 0.2,  # Weight of the flipped-answer CE on the forget set.
    },
    rules=full_param.WEIGHT_RULE, trainable='full', loss=badt_loss_fn, batches=full_param.flipped_batches,
    hparams=full_param.constant_hparams('weight')))

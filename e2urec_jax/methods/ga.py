"""GA (LLM unlearning): pure gradient ascent on the forget set, no retain term."""
from e2urec_jax.methods import full_param
from e2urec_jax.methods.spec import MethodSpec, register


def ga_loss_fn(model):
  from e2urec_jax import losses  # no JAX in config

  def loss_fn(params, frozen, batch, rng, hp):
    # The retain batch is still run (and its CE logged): the step keeps the other baselines' shape.
    _, ce_r, ce_f = full_param.retain_forget_ce(model, params, batch, rng)
    return losses.ga_loss(ce_f), {'retain_ce': ce_r, 'forget_ce': ce_f}
  return loss_fn


SPEC = register(MethodSpec(
    name='ga',
    summary='pure gradient ascent on the forget set, full parameters',
    defaults={
        'learning_rate': 5e-5,  # AdamW rate.
        'steps': 300,  # Steps in all.
        'batch_size': 16,  # Retain (logged only) and forget samples per step, each.
    },
    rules={}, trainable='full', loss=ga_loss_fn, batches=full_param.paired_batches))

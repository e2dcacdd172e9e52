"""The sharding checks' loss and gradients (tests/sharding_check.py, tests/test_fsdp.py): the train step
without its update, compiled with the same placements (train/steps.py), so sharded == unsharded can be
compared on the gradients themselves."""
import jax

from e2urec_jax.train import mesh as mesh_lib
from e2urec_jax.train.steps import BATCH, FROZEN, PlacedJit, REPLICATED


def loss_and_grads(loss_fn, mesh) -> PlacedJit:
  """The same loss and gradients without the update: for checking sharded == unsharded."""
  rep = mesh_lib.replicated(mesh)

  def fn(trainable, frozen, batch, rng, hp):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch, rng, hp)
    return loss, grads

  return PlacedJit(fn, mesh, (REPLICATED, FROZEN, BATCH, REPLICATED, REPLICATED), out_shardings=(rep, rep))

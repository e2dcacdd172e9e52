"""Which samples each step sees: a pure function of (seed, step), so resuming needs only the step."""
import numpy as np

from e2urec_jax.errors import UserError


def steps_per_epoch(num_items: int, batch_size: int) -> int:
  return max(1, num_items // batch_size)


def batch_indices(indices: np.ndarray, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Rows of step `step`: epoch e is a seeded permutation of `indices`, cut into full batches.

  A set smaller than one batch is cycled (the forget set of a tiny run can be).
  """
  indices = np.asarray(indices)
  if len(indices) == 0:
    raise UserError('a training phase has no samples to draw batches from (an empty retain set, forget set or '
                    'shard); change config.data.forget_fraction or config.data.num_shards')
  per_epoch = steps_per_epoch(len(indices), batch_size)
  epoch, within = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(indices)
  if len(order) < batch_size:
    order = np.resize(order, batch_size)
  return order[within * batch_size:(within + 1) * batch_size]


def eval_chunks(num_items: int, batch_size: int, multiple: int):
  """Evaluation batches in order; the last one is padded (masked) up to a multiple of the devices."""
  for start in range(0, num_items, batch_size):
    stop = min(start + batch_size, num_items)
    yield np.arange(start, stop), (-(stop - start) % multiple)

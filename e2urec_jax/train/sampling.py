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


def fit_batch_sizes(config, split_sizes: dict, data_shards: int = 1) -> list[str]:
  """Lowers every batch size of `config` that is larger than the data it is drawn from (a typo such as
  1000000000 would build that many rows on the host, until the kernel kills the process) to that
  size, rounded down to a multiple of the data-parallel devices, and returns a line for each.

  Training batches (train, augment, each unlearning method's) are drawn from the train split or
  its subsets: at most the train split's size (a subset smaller than a batch is still cycled,
  as above). The evaluation batch: at most the largest split. Runs before the phases'
  fingerprints are checked, so the recorded settings are the ones the phases use."""
  train = int(split_sizes['train'])
  largest = max(int(n) for n in split_sizes.values())
  fields = [('train', config.train), ('augment', config.augment)]
  fields += [(f'unlearn.{name}', section) for name, section in config.unlearn.items()
             if hasattr(section, 'keys') and 'batch_size' in section]
  fields = [(where, section, train, f'the {train} samples of the train split') for where, section in fields]
  fields.append(('eval', config.eval, largest, f'the {largest} samples of the largest split'))
  lines = []
  for where, section, limit, what in fields:
    size = int(section.batch_size)
    if size <= limit:
      continue
    fitted = max(data_shards, limit - limit % data_shards)
    section.batch_size = fitted
    lines.append(f'config.{where}.batch_size={size} is more than {what}: using {fitted}')
  return lines

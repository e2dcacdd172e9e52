"""The device mesh: a 'data' axis over every device of every host, and an optional 'model' axis.

`jax.jit` with `NamedSharding`s does what `pmap` did: the batch is split on its rows over
'data' (and repeated along 'model'), adapters and optimizer state are replicated. With
`c.mesh.model_axis > 1` the frozen weights (base, teachers) are sharded FSDP-style: each
leaf is split along its largest dimension divisible by the 'model' size, so a base larger
than one device fits, and XLA gathers the pieces a layer needs when it runs.

Multi-host: every process builds the same global host batch (sampling is a pure function
of seed and step) and hands over only the rows its own devices hold
(`make_array_from_process_local_data`), so the same code runs on one CPU or a pod slice.
"""
import functools

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from e2urec_jax.errors import UserError

DATA_AXIS = 'data'
MODEL_AXIS = 'model'


def make_mesh(model_axis: int = 1, devices=None) -> Mesh:
  """('data', 'model') mesh over `devices` (default: all of every process); model_axis devices per model group.

  Consecutive devices form a model group, so on GPU/CPU hosts (process-major device order) the
  weight all-gathers stay inside a host when model_axis divides its device count; on TPU the
  order follows the chips' physical layout.
  """
  devices = list(jax.devices() if devices is None else devices)
  model_axis = int(model_axis)
  if model_axis < 1 or len(devices) % model_axis:
    raise UserError(f'config.mesh.model_axis={model_axis} must be >= 1 and divide the number of devices '
                    f'({len(devices)}: {jax.devices()[0].platform}); e.g. --config.mesh.model_axis=1')
  shape = (len(devices) // model_axis, model_axis)
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
  except Exception:  # a topology mesh_utils does not know (CPU, odd slices): plain order is always valid
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def num_data_shards(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def model_axis_size(mesh: Mesh) -> int:
  return mesh.shape.get(MODEL_AXIS, 1)


# ------------------------------------------------------------------ batches
@functools.lru_cache(maxsize=256)
def _process_rows(global_rows: int, mesh: Mesh):
  data = num_data_shards(mesh)
  if global_rows % data:
    raise UserError(f'a batch of {global_rows} rows does not split over the {data} data-parallel devices; '
                     f'use a batch size that is a multiple of {data}')
  spans = sorted({(idx[0].start or 0, global_rows if idx[0].stop is None else idx[0].stop)
                  for idx in batch_sharding(mesh).addressable_devices_indices_map((global_rows,)).values()})
  if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
    return None  # this process's devices hold rows in several places (an unusual device order)
  return slice(spans[0][0], spans[-1][1])


def process_rows(global_rows: int, mesh: Mesh) -> slice | None:
  """The rows of a global batch that this process's devices hold (all of them on one host);
  None when they are not one contiguous block."""
  return _process_rows(int(global_rows), mesh)


def put_batch(batch, mesh: Mesh):
  """Host numpy batch (the global rows, the same on every process) -> global arrays sharded on rows.

  Each process transfers only its own rows (`process_rows`); on one host that is all of them.
  """
  sharding = batch_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    rows = process_rows(x.shape[0], mesh)
    if rows is None:
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)
  return jax.tree.map(put, batch)


# ------------------------------------------------------------------ weights
def fsdp_spec(shape, model_size: int) -> P:
  """P with 'model' on the largest dimension divisible by model_size (the first such, on ties); P() if none."""
  if model_size <= 1:
    return P()
  best = None
  for dim, n in enumerate(shape):
    if n % model_size == 0 and n >= model_size and (best is None or n > shape[best]):
      best = dim
  if best is None:
    return P()
  return P(*([None] * best + [MODEL_AXIS]))


def fsdp_sharding(shape, mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, fsdp_spec(tuple(shape), model_axis_size(mesh)))


def frozen_shardings(tree, mesh: Mesh):
  """A pytree of shardings for frozen weights: an array already placed on `mesh` keeps its placement
  (what `put_frozen`, or `put_replicated`, chose); anything else gets the FSDP sharding."""
  return jax.tree.map(lambda x: x.sharding if is_placed(x, mesh) else fsdp_sharding(np.shape(x), mesh), tree)


def _place(x, sharding):
  """x onto `sharding`. With several processes, host values go through make_array_from_callback
  (each process fills only its own shards): jax.device_put would first all-gather every leaf to
  check that all processes passed the same value, one collective per leaf."""
  if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
    return jax.device_put(x, sharding)
  x = np.asarray(x)
  x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _put(tree, shardings):
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)  # one batched transfer
  return jax.tree.map(_place, tree, shardings)


def put_frozen(tree, mesh: Mesh):
  """Frozen weights onto the mesh, FSDP-sharded over 'model' (replicated when the axis has size 1)."""
  return _put(tree, jax.tree.map(lambda x: fsdp_sharding(np.shape(x), mesh), tree))


def put_replicated(tree, mesh: Mesh):
  return _put(tree, jax.tree.map(lambda _: replicated(mesh), tree))


def put_on_mesh(tree, mesh: Mesh):
  """Arrays already placed on `mesh` (e.g. by put_frozen) stay as they are; everything else is replicated."""
  return _put(tree, jax.tree.map(lambda x: x.sharding if is_placed(x, mesh) else replicated(mesh), tree))


def is_placed(x, mesh: Mesh) -> bool:
  """Whether `x` is a jax.Array already laid out on `mesh` (Context.put keeps such arrays as they are)."""
  return isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh

"""Data parallelism over every local device and host with one `Mesh` axis.

`jax.jit` with `NamedSharding`s does what `pmap` did: parameters replicated, the batch
split on its leading axis. Each process hands over only its local rows
(`make_array_from_process_local_data`), so the same code runs on one CPU or a pod slice.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def num_data_shards(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Rows this process feeds; the global batch must split evenly over the devices."""
  return global_batch // jax.process_count()


def put_batch(batch, mesh: Mesh):
  """Host numpy batch (this process's rows) -> global arrays sharded on the batch axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))

"""Data parallelism over all local devices: a 1-d "data" mesh, parameters replicated, batches sharded."""

from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A mesh of the first `num_devices` local devices (default all) along one axis named "data"."""
  devices = jax.local_devices()[: num_devices or jax.local_device_count()]
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def replicate(tree, mesh: jax.sharding.Mesh):
  """Places every array of `tree` on every device of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(x: jax.Array, mesh: jax.sharding.Mesh, axis: int = 0) -> jax.Array:
  """Inside jit: asks XLA to split `x` along `axis` over the "data" devices (no-op on one device)."""
  if mesh.size == 1:
    return x
  spec = [None] * x.ndim
  spec[axis] = "data"
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec)))

"""Many devices and many processes: starting JAX's multi-controller runtime, the 2-D ("replicas", "data")
mesh over every device of every process, placing arrays on it, and reading them back.

  parallel.initialize(ClusterConfig(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=i))
  mesh = parallel.mesh(num_replicas=10, batch_size=64)        # seeds spread over devices, batch over the rest
  x = parallel.put(np_array, mesh, P("replicas"))              # each process gives the same host array

One process per host (a TPU pod slice, a GPU cluster) runs the same command; `jax.distributed` links them.
Training state with a leading replica axis is sharded over "replicas" (each device trains its own seeds),
each batch over "data". Every process reads the dataset from its own disk (the data are replicated);
results, figures and pages are written by process 0 (`is_writer`), orbax checkpoints by all.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from redundancy_jax.core.config import option
from redundancy_jax.core.errors import BadOption
from redundancy_jax.core.processes import _SUPERVISED, _Prefixed, _Watchdog, cluster_detected

AXES = ("replicas", "data")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
  """How many processes and devices run a command (every script's flags; not part of what it computes)."""

  coordinator_address: str | None = option(None, "host:port of process 0 in a multi-process run (with "
                                                 "--num_processes and --process_id; detected on Cloud TPU and SLURM).")
  num_processes: int | None = option(None, "Processes of a multi-process run (default: detected, else 1).")
  process_id: int | None = option(None, "This process's index, 0..num_processes-1.")
  heartbeat_timeout: int = option(30, "Seconds without news of a process after which the others stop, naming it.")
  cpu_devices: int | None = option(None, "CPU devices per process (default 1; the seeds can spread over them).")


def initialize(cfg: ClusterConfig) -> None:
  """Starts the multi-controller runtime when the config names processes or a cluster is detected (one
  process otherwise, as before), before anything touches a device. Idempotent."""
  if cfg.cpu_devices:
    jax.config.update("jax_num_cpu_devices", cfg.cpu_devices)
  explicit = (cfg.coordinator_address, cfg.num_processes, cfg.process_id)
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    raise BadOption("a multi-process run needs all of --coordinator_address, --num_processes and --process_id "
                     "(or none of them, where JAX detects the cluster: Cloud TPU, SLURM)")
  if jax.distributed.is_initialized() or (explicit[0] is None and cluster_detected() is None):
    return
  if explicit[1] is not None and not 0 <= explicit[2] < explicit[1]:
    raise BadOption(f"--process_id={explicit[2]} must lie in 0..{explicit[1] - 1}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
  # JAX's own heartbeat check aborts with a stack trace; it is the backstop of `_Watchdog`, which stops first
  jax.distributed.initialize(*explicit, heartbeat_timeout_seconds=2 * cfg.heartbeat_timeout + 10)
  if jax.process_index() > 0 and not os.environ.get(_SUPERVISED):  # (`supervise` prefixes whole file descriptors)
    sys.stdout, sys.stderr = (_Prefixed(s, f"[process {jax.process_index()}] ") for s in (sys.stdout, sys.stderr))
    absl_logging.get_absl_handler().python_handler.stream = sys.stderr  # it kept the stream it started with
  _Watchdog.start(cfg.heartbeat_timeout)



def is_multi_process() -> bool:
  return jax.process_count() > 1


def is_writer() -> bool:
  """Whether this process writes results, figures and pages (process 0)."""
  return jax.process_index() == 0


def split(num_devices: int, num_replicas: int, batch_size: int, replica_devices: int | None = None) -> tuple[int, int]:
  """(devices along "replicas", devices along "data"): by default the most devices that divide the seeds
  evenly (each device trains its own), the rest sharding the batch; `replica_devices` chooses."""
  r = math.gcd(num_replicas, num_devices) if replica_devices is None else replica_devices
  if r < 1 or num_devices % r or num_replicas % r:
    valid = [d for d in range(1, num_devices + 1) if num_devices % d == 0 and num_replicas % d == 0]
    raise BadOption(f"--replica_devices={r} must divide both the {num_devices} devices and the {num_replicas} "
                     f"seeds; valid: {', '.join(map(str, valid))}")
  d = num_devices // r
  if batch_size % d:
    raise BadOption(f"batch size {batch_size} is not divisible by the {d} devices it would be sharded over "
                     f"({num_devices} devices, {r} for the seeds); change --num_devices or --replica_devices")
  return r, d


def mesh(num_replicas: int = 1, batch_size: int = 1, *, num_devices: int | None = None,
         replica_devices: int | None = None) -> jax.sharding.Mesh:
  """The ("replicas", "data") mesh over the first `num_devices` devices of all processes (default all)."""
  devices = jax.devices()
  count = num_devices or len(devices)
  if jax.process_count() > 1 and count != len(devices):
    raise BadOption(f"a multi-process run uses every device ({len(devices)}); drop --num_devices")
  r, d = split(count, num_replicas, batch_size, replica_devices)
  grid = np.asarray(devices[:count], dtype=object).reshape(r, d)
  return jax.sharding.Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def data_mesh() -> jax.sharding.Mesh:
  """Every device of every process along "data" (the analyses split their data chunks over it)."""
  return mesh(1, jax.device_count())


def put(tree: Any, mesh_: jax.sharding.Mesh, spec: P = P()) -> Any:
  """`tree`'s host arrays (the same in every process) placed on the mesh with `spec` (default: replicated),
  as global arrays: in a multi-process run each process hands over its own part of each."""
  sharding = NamedSharding(mesh_, spec)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:  # already global (e.g. restored by orbax)
      return jax.device_put(a, sharding)
    return jax.make_array_from_callback(np.shape(a), sharding, lambda index: np.asarray(a)[index])

  return jax.tree.map(one, tree)


def replicate(tree: Any, mesh_: jax.sharding.Mesh) -> Any:
  """Places every array of `tree` on every device of the mesh."""
  return put(tree, mesh_, P())


def fetch(tree: Any) -> Any:
  """`tree`'s arrays as NumPy arrays in every process (gathered across processes where they are sharded)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))
                      if isinstance(a, jax.Array) and not a.is_fully_addressable else np.asarray(a), tree)


def shard_batch(x: jax.Array, mesh_: jax.sharding.Mesh, axis: int = 0, replica_axis: int | None = None) -> jax.Array:
  """Inside jit: asks XLA to split `x` along `axis` over the "data" devices (and along `replica_axis` over
  the "replicas" devices); a no-op on one device."""
  if mesh_.size == 1:
    return x
  spec = [None] * x.ndim
  spec[axis] = "data"
  if replica_axis is not None:
    spec[replica_axis] = "replicas"
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh_, P(*spec)))


def one_at_a_time(out: Any, mesh_: jax.sharding.Mesh) -> Any:
  """`out`, waited for when `mesh_` spans several CPU devices. XLA:CPU deadlocks when several programs
  with collectives are in flight on its devices at once (the host-stepped evaluation chunks of a conv
  net on 2 or 4 CPU devices: a rendezvous that never completes, then an abort; jaxlib 0.10.2), so the
  host-stepped loops dispatch one program at a time there. Elsewhere asynchronous dispatch is kept."""
  if mesh_.size > 1 and mesh_.devices.flat[0].platform == "cpu":
    jax.block_until_ready(out)
  return out


def same_everywhere(value: str, what: str) -> None:
  """An error in every process when the processes do not all hold the same `value` (e.g. a config)."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(__import__("hashlib").sha256(value.encode()).digest()[:8], np.int64)
  every = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
  differ = [i for i, d in enumerate(every) if d != every[0]]
  if differ:
    raise BadOption(f"process(es) {', '.join(map(str, differ))} started with another {what} than process 0; "
                     f"start every process with the same command")


def anyone(flag: bool) -> bool:
  """Whether `flag` holds in any process, in every process: for decisions that must agree, such as saving
  a checkpoint now (orbax saves from every process together) or stopping on a signal one process got."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(bool(flag)))).any())


_SHARED: set[str] = set()  # folders already checked


def check_shared(folder: str) -> None:
  """An error in every process unless `folder` is on a filesystem every process sees (a multi-process
  run writes its checkpoints from every process and its results from process 0, and reads them back)."""
  folder = os.path.abspath(folder)
  if jax.process_count() == 1 or folder in _SHARED:
    return
  token = int(multihost_utils.broadcast_one_to_all(np.int32(np.random.default_rng().integers(2**31 - 1))))
  probe = os.path.join(folder, f".shared-check-{token}")
  if is_writer():
    os.makedirs(folder, exist_ok=True)
    open(probe, "w").close()
  barrier(f"wrote shared-check {token}")
  seen = np.asarray(multihost_utils.process_allgather(np.int32(os.path.exists(probe)))).reshape(-1)
  barrier(f"read shared-check {token}")
  if is_writer():
    os.remove(probe)
  missing = [i for i, s in enumerate(seen) if not s]
  if missing:
    raise BadOption(f"process(es) {', '.join(map(str, missing))} do not see {folder}, which process 0 writes: "
                     f"a multi-process run needs its --workdir on a filesystem every process shares (NFS, "
                     f"Filestore, a GCS FUSE mount)")
  _SHARED.add(folder)


def barrier(name: str) -> None:
  """Every process waits here for the others (after process 0 wrote files they read)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)

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

import atexit
import contextlib
import dataclasses
import math
import os
import re
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
from absl import logging as absl_logging
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from redundancy_jax.core.config import option
from redundancy_jax.core.errors import BadOption

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


def cluster_detected() -> str | None:
  """The cluster JAX can configure itself from (SLURM with several tasks, a multi-host Cloud TPU), or None."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return "SLURM"
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return "Cloud TPU"
  return None


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


# ----------------------------------------------------------------------------- processes other than 0

_SUPERVISED = "REDUNDANCY_JAX_SUPERVISED"
# JAX's runtime ends a process whose coordinator (process 0) is gone with a fatal log and a stack dump
# (LOG(FATAL), then abort); these lines start it.
_FATAL = "Terminating process because the JAX distributed service detected fatal errors"
# Lines of JAX's C++ runtime (glog: severity, date, time, thread, source.cc:line]) and of a crash dump: held
# back for a few seconds, as they may be the start of the fatal log of a lost coordinator.
_RUNTIME_LOG = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]|\*\*\* |Fatal Python error)")
_HOLD_SECS = 5.0


def known_process_id(argv: list[str], environ=os.environ) -> int | None:
  """This process's index in a multi-process run as the command line (--process_id) or the cluster's
  environment (SLURM_PROCID, CLOUD_TPU_TASK_ID) give it before JAX starts, else None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--process_id="):
      value = arg.split("=", 1)[1]
    elif arg == "--process_id" and i + 1 < len(argv):
      value = argv[i + 1]
    else:
      continue
    return int(value) if value.isdigit() else None
  if int(environ.get("SLURM_NTASKS", "1")) > 1 and environ.get("SLURM_PROCID", "").isdigit():
    return int(environ["SLURM_PROCID"])
  if cluster_detected() and environ.get("CLOUD_TPU_TASK_ID", "").isdigit():
    return int(environ["CLOUD_TPU_TASK_ID"])
  return None


def supervise() -> None:
  """In a process other than 0 of a multi-process run, runs this same command as a child and relays its
  output with every line prefixed by "[process i] ", at the file-descriptor level: lines that JAX's C++
  runtime writes (gloo's connection notes, fatal logs) are prefixed too. When process 0 dies, JAX's
  runtime aborts the child with a fatal log and a stack dump; the supervisor prints one line naming
  process 0 instead, and exits with status 1. SIGINT and SIGTERM go to the child (which saves a
  checkpoint first); if the supervisor is killed, the child dies with it. Returns at once where there is
  nothing to supervise (one process, process 0, or in the child itself); otherwise exits."""
  process = known_process_id(sys.argv)
  if not process or os.environ.get(_SUPERVISED):
    return
  import signal
  import subprocess

  def die_with_parent():  # Linux: the child gets SIGKILL when the supervisor dies
    with contextlib.suppress(Exception):
      import ctypes

      ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

  child = subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env={**os.environ, _SUPERVISED: "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: child.send_signal(signum))
  prefix, fatal, lock = f"[process {process}] ".encode(), threading.Event(), threading.Lock()
  held, last_held = [], [0.0]  # C++ runtime lines not yet shown, when the last came

  def show(sink, line: bytes) -> None:
    sink.write(prefix + line if not line.startswith(b"\r") else b"\r" + prefix + line[1:])
    sink.flush()

  def relay(source, sink, hold: bool):
    for line in iter(source.readline, b""):
      text = line.decode(errors="replace")
      with lock:
        if hold and (held or _RUNTIME_LOG.match(text)):
          held.append(line)
          last_held[0] = time.monotonic()
          if _FATAL in text:
            fatal.set()
        else:
          show(sink, line)

  def release():  # runtime lines that no fatal log followed are shown after a few seconds
    while child.poll() is None:
      time.sleep(0.5)
      with lock:
        if held and not fatal.is_set() and time.monotonic() - last_held[0] > _HOLD_SECS:
          for line in held:
            show(sys.stderr.buffer, line)
          held.clear()

  threads = [threading.Thread(target=relay, args=(child.stdout, sys.stdout.buffer, False), daemon=True),
             threading.Thread(target=relay, args=(child.stderr, sys.stderr.buffer, True), daemon=True),
             threading.Thread(target=release, daemon=True)]
  for t in threads:
    t.start()
  status = child.wait()
  for t in threads:
    t.join(timeout=5)
  if status != 0 and fatal.is_set():
    print(f"[process {process}] error: process 0 (the coordinator) is gone (killed, crashed or preempted?); "
          f"stopping. Start every process again with the same command: a training run resumes from its last "
          f"checkpoint.", file=sys.stderr, flush=True)
    sys.exit(1)
  for line in held:
    show(sys.stderr.buffer, line)
  sys.exit(status if status >= 0 else 128 - status)


def _runtime_client():
  """JAX's distributed runtime client, whose key-value store the watchdog uses. No public API exposes it:
  it is `jax._src.distributed.global_state.client` in jax 0.7-0.10 (tests/test_damaged.py fails when JAX
  moves it); elsewhere a clear error instead of an AttributeError deep in a thread."""
  try:
    from jax._src import distributed

    client = distributed.global_state.client
    assert all(hasattr(client, m) for m in ("key_value_set", "key_value_try_get"))
  except (ImportError, AttributeError, AssertionError):
    raise RuntimeError(f"jax {jax.__version__} no longer has jax._src.distributed.global_state.client with a "
                       f"key-value store, which the multi-process watchdog reads; redundancy_jax supports jax "
                       f"0.7-0.10") from None
  return client


class _Watchdog:
  """Every process says "alive" once a second in the coordinator's key-value store and reads the others'.
  A process silent for `timeout` seconds (killed, crashed, preempted, its machine gone), or one that
  reports a failure, stops every other with a message naming it: no process waits forever in a
  collective. A process that finishes says "done" (at exit) and is no longer watched. When process 0 (the
  coordinator, which holds the store) dies, JAX's runtime stops the others at once, with its own message
  ("Terminating process because the JAX distributed service detected fatal errors ... another task died")."""

  _instance: _Watchdog | None = None

  def __init__(self, timeout: float):
    self.client, self.me, self.timeout = _runtime_client(), jax.process_index(), timeout
    self.others = [p for p in range(jax.process_count()) if p != self.me]
    self.stop = threading.Event()
    self.failed: str | None = None  # why this process stops
    self.silent: set[int] = set()  # processes gone without a word

  @classmethod
  def start(cls, timeout: float) -> None:
    cls._instance = dog = cls(timeout)
    dog.say("alive 0")
    threading.Thread(target=dog.watch, name="redundancy_jax watchdog", daemon=True).start()
    atexit.register(dog.finish)  # runs before JAX's own exit handler, which waits for every process

  def say(self, state: str) -> None:
    self.client.key_value_set(f"redundancy_jax/state/{self.me}", state, allow_overwrite=True)

  def state(self, process: int) -> str | None:
    try:
      return self.client.key_value_try_get(f"redundancy_jax/state/{process}")
    except jax.errors.JaxRuntimeError as e:  # not set yet; anything else (the coordinator gone) reaches `watch`
      if "NOT_FOUND" in str(e):
        return None
      raise

  def watch(self) -> None:
    heard = {p: (None, time.monotonic()) for p in self.others}  # process -> (last state, when it changed)
    unreachable_since, beat = None, 0
    while not self.stop.wait(1.0):
      now = time.monotonic()
      try:
        beat += 1
        if self.failed is None:
          self.say(f"alive {beat}")
        for p in list(heard):
          state = self.state(p)
          if state == "done":
            del heard[p]
          elif state is not None and state.startswith(("failed", "gone")):
            if self.failed is None:  # (a failed process waits for the others in `fail`)
              self.lost(p, state.split(": ", 1)[-1])
          elif state != heard[p][0]:
            heard[p] = (state, now)
          elif now - heard[p][1] > self.timeout:
            self.silent.add(p)
            self.lost(p, f"sent no news for {self.timeout:g} s (killed, crashed or preempted?)")
        unreachable_since = None
      except jax.errors.JaxRuntimeError as e:
        unreachable_since = unreachable_since or now
        if now - unreachable_since > self.timeout:
          self.silent.add(0)
          self.lost(0, f"(the coordinator) cannot be reached for {self.timeout:g} s: {str(e).splitlines()[0]}")

  def lost(self, process: int, why: str) -> None:
    """Stops this process with a message naming `process` (status 1)."""
    self.stop.set()
    self.failed = self.failed or f"stopped because process {process} did"
    with contextlib.suppress(jax.errors.JaxRuntimeError):  # the coordinator may be the one gone
      self.say(f"failed: {self.failed}")
    sys.stdout.flush()
    print(f"error: process {process} {why}; stopping. Start every process again with the same command: a "
          f"training run resumes from its last checkpoint.", file=sys.stderr, flush=True)
    self.leave(1)

  def leave(self, status: int) -> None:
    """Exits with `status`, skipping JAX's exit handler (which would wait for every process). Process 0
    holds the coordinator, so it leaves last: after the others (those not silent) said "gone"."""
    if self.me == 0:
      self.wait(lambda state: state.startswith(("gone", "done")), [p for p in self.others if p not in self.silent])
      time.sleep(0.2)
    else:
      with contextlib.suppress(jax.errors.JaxRuntimeError):
        self.say(f"gone: {self.failed}")
    os._exit(status)

  def wait(self, until, processes) -> None:
    """Waits (at most `timeout` + 5 s) for the state of every one of `processes` to satisfy `until`."""
    deadline = time.monotonic() + self.timeout + 5
    while time.monotonic() < deadline:
      try:
        if all(until(self.state(p) or "") for p in processes):
          return
      except jax.errors.JaxRuntimeError:  # the coordinator gone: nobody left to wait for
        return
      time.sleep(0.1)

  def finish(self) -> None:
    if not self.stop.is_set() and self.failed is None:
      self.stop.set()
      self.say("done")

  def fail(self, message: str, status: int) -> None:
    """This process failed with `message`: tells the others, waits for process 0 to have heard (or for
    the watchdog to name a process that went silent), then leaves with `status`."""
    self.failed = message.splitlines()[0][:500] if message else "stopped"
    with contextlib.suppress(jax.errors.JaxRuntimeError):
      self.say(f"failed: {self.failed}")
    sys.stdout.flush()
    sys.stderr.flush()
    if self.me != 0:
      self.wait(lambda state: state.startswith(("failed", "gone", "done")), [0])
    self.leave(status)


def peer_lost(e: BaseException) -> bool:
  """Whether `e` is a collective that failed because another process went away (its socket closed)."""
  text = str(e)
  return isinstance(e, jax.errors.JaxRuntimeError) and any(
    s in text for s in ("Connection closed by peer", "Connection reset by peer", "Socket closed", "UNAVAILABLE"))


def await_watchdog() -> None:
  """Waits (at most the heartbeat timeout and a few seconds) for the watchdog to name the process that was
  lost and stop this one; returns if it does not."""
  dog = _Watchdog._instance
  if dog is not None and dog.stop.wait(dog.timeout + 5):
    time.sleep(dog.timeout + 10)  # `lost` exits the process once the others have heard (`leave`)


def fail(message: str, status: int) -> None:
  """In a multi-process run: tells the other processes that this one failed and exits with `status`
  (they stop too, naming it). Does nothing in a single process."""
  if _Watchdog._instance is not None:
    _Watchdog._instance.fail(message, status)


class _Prefixed:
  """A text stream that starts every line with `prefix`."""

  def __init__(self, stream, prefix: str):
    self.stream, self.prefix, self.fresh = stream, prefix, True

  def write(self, text: str) -> int:
    out = []
    for piece in text.splitlines(keepends=True):
      if self.fresh or piece.startswith("\r"):
        piece = piece.replace("\r", "\r" + self.prefix, 1) if piece.startswith("\r") else self.prefix + piece
      out.append(piece)
      self.fresh = piece.endswith("\n")
    return self.stream.write("".join(out))

  def __getattr__(self, name):
    return getattr(self.stream, name)


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

"""Processes of a multi-process run watching each other: which process this is, the supervisor that
relays a process's output with its "[process i] " prefix and turns the runtime's abort into one line, the
watchdog that names a process gone silent, and how a failure stops the others (`core/parallel.py` starts
the runtime and calls these).

  processes.supervise()        # first thing of a command: a process other than 0 re-runs itself supervised
  processes.fail(message, 1)   # a multi-process run: the others stop too, naming this process
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading
import time

import jax

def cluster_detected() -> str | None:
  """The cluster JAX can configure itself from (SLURM with several tasks, a multi-host Cloud TPU), or None."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return "SLURM"
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return "Cloud TPU"
  return None



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


"""What a long run shows and how it stops: one progress line, interrupts that let it save first, numbers
printed as numbers."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Callable, Iterator, Sequence, TextIO


class Interrupted(KeyboardInterrupt):
  """A run stopped by SIGINT or SIGTERM after saving what it had; rerunning the same command resumes."""

  def __init__(self, step: int):
    super().__init__(f"interrupted at step {step}: rerun the same command to resume")
    self.step = step


class StopFlag:
  """Set by the first SIGINT or SIGTERM while `interruptible` is active."""

  requested = False


@contextlib.contextmanager
def interruptible(log: Callable[[str], None] = print) -> Iterator[StopFlag]:
  """While active, the first SIGINT or SIGTERM only sets the returned flag, so the loop can finish its
  current unit of work and save; a second one raises KeyboardInterrupt at once. Outside the main thread
  (where Python cannot install handlers) the flag is never set."""
  flag = StopFlag()
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handle(signum, frame):
    if flag.requested:
      raise KeyboardInterrupt
    flag.requested = True
    log(f"\n{signal.Signals(signum).name}: finishing this epoch and saving a checkpoint (again to stop at once)")

  previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def in_notebook() -> bool:
  """Whether this runs in a Jupyter or Colab kernel (whose output area honours a carriage return)."""
  return "ipykernel" in sys.modules and type(sys.stdout).__module__.startswith("ipykernel")


class Progress:
  """One line per run: rewritten in place on a terminal or in a notebook, else printed at most every
  `every_secs`."""

  def __init__(self, stream: TextIO | None = None, every_secs: float = 30.0):
    self.stream = stream or sys.stdout
    self.every_secs = every_secs
    self.tty = (hasattr(self.stream, "isatty") and self.stream.isatty()) or (self.stream is sys.stdout and in_notebook())
    self._last = -float("inf")
    self._width = 0

  def update(self, text: str, final: bool = False) -> None:
    if self.tty:
      self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
      self._width = 0 if final else len(text)
      self.stream.flush()
    elif final or time.time() - self._last >= self.every_secs:
      print(text, file=self.stream, flush=True)
      self._last = time.time()


def numbers(values: Sequence[float], fmt: str = ".4f", unit: str = "") -> str:
  """One value as itself; several (one per replica) as their mean and spread: `94.80%` or
  `88.76% +- 0.15 over 3 replicas`."""
  values = [float(v) for v in values]
  if len(values) == 1:
    return format(values[0], fmt) + unit
  mean = sum(values) / len(values)
  std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
  return f"{format(mean, fmt)}{unit} +- {format(std, fmt)} over {len(values)} replicas"


def duration(seconds: float) -> str:
  """`42s`, `3m05s`, `1h02m`."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

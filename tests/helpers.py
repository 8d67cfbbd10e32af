"""Helpers of the tests (imported as `helpers`; conftest.py holds the fixtures)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The LeNet recipe on the bundled MNIST reaches its minimum validation loss at step 2,100 (BUILD_NOTES.md);
# its first 3,000 steps are the first 3,000 of the 50,000-step run (the same seed, data order and constant
# learning rate), so they hold the same trained model.
LENET_STEPS = 3000
# The quick reproduction the page tests share: the quick profile with one seed per conv net instead of two
# (half the fixture's time; every claim stays testable).
QUICK_REPORT_SEEDS = ("conv2=1", "conv6=1", "vgg19=1")


def quiet(_):
  """A `log` that prints nothing."""


def python(*args, timeout: float = 900, cwd: str = ROOT, **kwargs) -> subprocess.CompletedProcess:
  """`python args...` (from the repository root unless `cwd`), its output captured; one that is still
  running after `timeout` seconds (hung, not slow: several times its usual time on a loaded machine) is
  killed and fails the test, naming it."""
  try:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)
  except subprocess.TimeoutExpired as e:
    command = " ".join("<script>" if "\n" in a else a for a in map(str, args))
    tail = lambda b: (b.decode(errors="replace") if isinstance(b, bytes) else b or "")[-2000:]
    raise AssertionError(f"`python {command}` did not finish in {timeout:g} s (hung?); its output:\n"
                         f"{tail(e.stdout)}\n{tail(e.stderr)}") from None


def script(name: str, *args, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
  """`python -m experiments.<name> args...` from the repository root, as a user runs it."""
  return python("-m", f"experiments.{name}", *args, timeout=timeout, **kwargs)


def mtimes(folder) -> dict:
  """{path: modification time} of every file below `folder`: to show that nothing was written."""
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs}

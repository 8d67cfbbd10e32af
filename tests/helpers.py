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


def script(name: str, *args, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
  """`python -m experiments.<name> args...` from the repository root, as a user runs it."""
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, **kwargs)


def mtimes(folder) -> dict:
  """{path: modification time} of every file below `folder`: to show that nothing was written."""
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs}

"""The two tiers (without -m: every test but those marked e2e; -m e2e: those) and shared fixtures: a persistent XLA compilation cache for the session (this process and the processes it
starts), the bundled MNIST, one short LeNet run that holds the recipe's trained model, one quick
reproduction shared by every test of the page, and headless Chromium."""

import os
import shutil
import subprocess
import tempfile

import pytest

from helpers import LENET_STEPS, QUICK_REPORT_SEEDS, quiet

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
# One compilation cache for the whole session: a program compiled by one test (or a test's subprocess)
# is read back by the next instead of compiled again. Set before JAX is imported anywhere.
# With `-n 2` (pytest-xdist) the workers inherit the controller's cache; the controller removes it.
CACHE = os.environ.get("REDUNDANCY_JAX_TEST_CACHE") or tempfile.mkdtemp(prefix="redundancy_jax_xla_cache_")
os.environ.update(REDUNDANCY_JAX_TEST_CACHE=CACHE, JAX_COMPILATION_CACHE_DIR=CACHE,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


E2E_NOTE = ("end-to-end tests (marked e2e: commands run whole as a user runs them, several processes, the quick "
            "reproduction's page, VGG19 whole, PyTorch's sweep) deselected; run them with: python -m pytest -q -n 2 --dist loadfile -m e2e tests")


def pytest_configure(config):
  config.addinivalue_line("markers", "e2e: a command run end to end (its quick preset, several processes, the quick "
                                     "reproduction's page, VGG19 whole, PyTorch's sweep); deselected unless -m selects it (CI runs both tiers)")


def pytest_collection_modifyitems(config, items):
  """Without -m, the default tier: every test but the end-to-end ones (README.md, BUILD_NOTES.md)."""
  if config.getoption("markexpr"):
    return
  deselected = [item for item in items if item.get_closest_marker("e2e")]
  if deselected:
    config.hook.pytest_deselected(items=deselected)
    items[:] = [item for item in items if not item.get_closest_marker("e2e")]
    config._e2e_deselected = len(deselected)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  if getattr(config, "_e2e_deselected", 0):
    terminalreporter.write_line(f"{config._e2e_deselected} {E2E_NOTE}")


def pytest_sessionfinish(session, exitstatus):
  if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
    shutil.rmtree(CACHE, ignore_errors=True)


@pytest.fixture
def chromium(tmp_path):
  """`run(url, *flags)`: headless Chromium on a page (a fresh profile per call); skips the test when
  Chromium is not installed (`apt-get install chromium`, as .ci/run does)."""
  if CHROMIUM is None:
    pytest.skip("chromium not installed (apt-get install chromium): page not tested")

  def run(url, *extra):
    profile = tmp_path / f"chromium-profile{len(list(tmp_path.glob('chromium-profile*')))}"
    cmd = [
      CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
      "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000", "--window-size=1300,1100", *extra, url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # a hang guard only

  return run


@pytest.fixture(scope="session")
def bundled_mnist_dir() -> str:
  """The folder of the package's MNIST test set (IDX files, as distributed): no download, no ../shared."""
  from redundancy_jax.core import data

  return data.BUNDLED_DIR


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory):
  """(workdir, results) of LeNet trained by the default recipe's first 3,000 steps on the bundled MNIST."""
  from redundancy_jax.core import train
  from redundancy_jax.core.config import TrainConfig

  workdir = str(tmp_path_factory.mktemp("lenet"))
  results = train.train(TrainConfig(model="lenet", steps=LENET_STEPS), workdir, log=quiet)
  return workdir, results


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory):
  """(workdir, log lines, seconds) of the quick profile's report stages, from scratch, in this process."""
  import time

  from redundancy_jax.reproduction import profiles, stages

  workdir = tmp_path_factory.mktemp("report")
  lines = []
  begin = time.time()
  cfg = profiles.ReproduceConfig(profile="quick", stages=("report",), seeds=QUICK_REPORT_SEEDS, workdir=str(workdir))
  stages.run(cfg, log=lines.append)
  return workdir, lines, time.time() - begin

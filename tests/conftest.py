"""Shared fixtures: the real MNIST test set bundled in the package, one LeNet trained by the default
recipe, and headless Chromium for the pages."""

import os
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


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
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)

  return run


@pytest.fixture(scope="session")
def bundled_mnist_dir() -> str:
  """The folder of the package's MNIST test set (IDX files, as distributed): no download, no ../shared."""
  from redundancy_jax import data

  return data.BUNDLED_DIR


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory):
  """(workdir, results) of LeNet trained by the full default recipe on the bundled MNIST data."""
  from redundancy_jax import train

  workdir = str(tmp_path_factory.mktemp("lenet"))
  results = train.train(train.TrainConfig(model="lenet"), workdir, log=lambda s: None)
  return workdir, results

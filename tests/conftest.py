"""Shared fixtures: the real MNIST test set bundled in the package, and one LeNet trained by the default
recipe."""

import pytest


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

"""Shared fixtures: real MNIST from ../shared/data, and one LeNet trained by the default recipe."""

import os

import pytest

SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


@pytest.fixture(scope="session")
def shared_mnist_dir() -> str:
  if not os.path.exists(os.path.join(SHARED_MNIST, "t10k-images-idx3-ubyte.gz")):
    pytest.skip(f"real MNIST test set not found at {SHARED_MNIST}")
  return SHARED_MNIST


@pytest.fixture(scope="session")
def trained_lenet(tmp_path_factory):
  """(workdir, results) of LeNet trained by the full default recipe on the bundled MNIST data."""
  from redundancy_jax import train

  workdir = str(tmp_path_factory.mktemp("lenet"))
  results = train.train(train.TrainConfig(model="lenet"), workdir, log=lambda s: None)
  return workdir, results

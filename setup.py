import re

from setuptools import find_packages, setup

with open("redundancy_jax/__init__.py", encoding="utf-8") as f:
  REPOSITORY = re.search(r'REPOSITORY = "([^"]*)"', f.read()).group(1)  # empty while unpublished

# Only the library is installed. The scripts (experiments/) and benchmarks (benchmarks/) run from a
# checkout's root as `python -m experiments.<name>`: installed as top-level packages, they would collide
# with any other project's `experiments`.
setup(
  name="redundancy_jax",
  version="0.2.0",
  description="Sources of redundancy in neural networks: pruning criteria, training dynamics, subspaces (JAX).",
  license="Apache-2.0",
  url=REPOSITORY or None,
  packages=find_packages(include=["redundancy_jax", "redundancy_jax.*"]),
  package_data={
    "redundancy_jax.core": ["data_files/mnist/*"],
    "redundancy_jax.models": ["onednn_conv.cc"],  # compiled on first use of REDUNDANCY_JAX_CONV=onednn
    "redundancy_jax.plots": ["templates/*"],
    "redundancy_jax.reproduction": ["templates/*"],
  },
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.7,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "tensorflow-datasets>=4.9.9,<5",
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "matplotlib>=3.8,<4",
    "absl-py>=2.1,<3",
    "jinja2>=3.1,<4",
  ],
  extras_require={
    "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "networkx>=3.2,<4", "nbclient>=0.10,<1", "nbformat>=5.9,<6", "ipykernel>=6.29,<8"],
    "gpu": ["jax[cuda12]>=0.7,<0.11"],
    "tpu": ["jax[tpu]>=0.7,<0.11"],
    "bench": ["torch>=2.4,<3", "torch-pruning>=1.5,<2"],  # PyTorch and Torch-Pruning anchors of the benchmarks only
  },
)

"""A layer's units as rows of a matrix (DEFINITIONS.md section 2), and the geometry every analysis reads
from it: norms, directions, cosine similarities.

  W = unit_matrix(params, "fc1")      # (m, n): one row per unit (a Dense kernel transposed)
  X = cosine_similarity(W)            # (m, m), float64
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np

from redundancy_jax.models import topology
from redundancy_jax.models.common import KERNEL_INIT
from redundancy_jax.core.errors import BadOption


class UnitError(BadOption):
  """A layer that does not exist in the parameters."""


def unit_matrix(params: Mapping, layer: str) -> jax.Array:
  """The layer's units as rows: Dense kernel (n, m) -> (m, n); Conv (kh, kw, c, m) -> (m, kh*kw*c).
  `params` is a parameter pytree or {"params": ...}; `layer` a "/"-joined path ("fc1", "block1/conv2")."""
  try:
    kernel = topology.kernel(params, layer)
  except (KeyError, TypeError):
    raise UnitError(f"unknown layer {layer!r}; layers with a kernel: {', '.join(topology.kernel_layers(params))}") from None
  return kernel.reshape(-1, kernel.shape[-1]).T


def kernel_from_units(W_MxN: jax.Array, kernel_shape: Sequence[int]) -> jax.Array:
  """Inverse of `unit_matrix`: Dense kernel = W.T, Conv kernel = W.T reshaped."""
  return W_MxN.T.reshape(kernel_shape)


def init_draws(kernel_shape: Sequence[int], draws: int = 16, seed: int = 0) -> list[np.ndarray]:
  """`draws` unit matrices of kernels of `kernel_shape` drawn by the models' initialiser (`KERNEL_INIT`):
  the control of a claim about a trained layer (its statistic at initialisation, over draws)."""
  keys = jax.random.split(jax.random.key(seed), draws)
  return [np.asarray(unit_matrix({"l": {"kernel": KERNEL_INIT(k, tuple(kernel_shape))}}, "l")) for k in keys]


def unit_norms(W) -> np.ndarray:
  """||w_i|| for the rows of `W` (m, n), in float64: the node sizes of the dynamics graph."""
  return np.linalg.norm(np.asarray(W, np.float64), axis=1)


def unit_directions(W) -> np.ndarray:
  """The rows of `W` normalised to unit length, in float64; a zero row stays zero."""
  W = np.asarray(W, np.float64)
  norms = np.linalg.norm(W, axis=1, keepdims=True)
  return np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)


def cosine_similarity(W, V=None) -> np.ndarray:
  """Cosine similarities between the rows of `W` and those of `V` (default `W`): U_W U_V^T of the
  normalised rows, so a zero row has similarity 0 with everything."""
  U = unit_directions(W)
  return U @ (U if V is None else unit_directions(V)).T


def mean_pairwise_cosine(W) -> float:
  """The mean cosine similarity over ordered pairs of distinct units."""
  X = cosine_similarity(W)
  m = len(X)
  return float((X.sum() - np.trace(X)) / max(1, m * (m - 1)))

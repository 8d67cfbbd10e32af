"""Filter clustering (Brutzkus and Globerson 2019; SPEC section 5): their XORD network, trained for many
widths at once, and the clustering of normalised filters by k-means.

XORD: x is d pairs of values in {-1, 1}, positive iff some pair is (1, 1) or (-1, -1). The network: a
convolution of 2k filters of size 2 and stride 2 (one filter sees one pair), ReLU, max-pool over the d
positions, and a fixed readout (+1 for the first k channels, -1 for the last k); hinge loss, SGD.
Every k of a sweep runs in one program: filters are padded to the largest k and masked.

  x, y, w = xord_enumeration(4)                     # all 256 points, labels +-1, balanced weights
  out = train_xord(key, ks=[2, 8, 32], ...)         # every k x seed, vmapped
  angles, labels, centres = nearest_centre_angles(filters, 4, seed=0)
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.cluster import vq


def xord_label(x: np.ndarray) -> np.ndarray:
  """+1 iff some pair (x_2i, x_2i+1) is (1, 1) or (-1, -1), else -1."""
  pairs = np.asarray(x).reshape(len(x), -1, 2)
  return np.where(np.any(pairs[..., 0] == pairs[..., 1], axis=1), 1, -1).astype(np.int32)


def xord_enumeration(pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every point of {-1, 1}^(2 d), its label, and the weight of each point under the balanced XORD
  distribution (both classes equally likely, uniform within a class): the exact test set."""
  x = np.asarray(list(itertools.product((-1.0, 1.0), repeat=2 * pairs)), np.float32)
  y = xord_label(x)
  weight = np.where(y > 0, 0.5 / np.sum(y > 0), 0.5 / np.sum(y < 0))
  return x, y, weight


def xord_net(W, x, mask):
  """Outputs of the XORD network with filters W (2 K, 2): channels [0, K) read +1, [K, 2 K) read -1,
  each multiplied by `mask` (2 K,) (0 for padding)."""
  K = W.shape[0] // 2
  patches = x.reshape(x.shape[0], -1, 2)  # (n, d, 2)
  pooled = jnp.max(jax.nn.relu(patches @ W.T), axis=1)  # (n, 2 K)
  readout = jnp.concatenate([jnp.ones(K), -jnp.ones(K)]) * mask
  return pooled @ readout


def channel_mask(k: int, K: int) -> np.ndarray:
  """The (2 K,) mask of a network with k filters per sign padded to K."""
  one = (np.arange(K) < k).astype(np.float32)
  return np.concatenate([one, one])


def hinge_loss(W, x, y, mask):
  return jnp.mean(jax.nn.relu(1.0 - y * xord_net(W, x, mask)))


@functools.partial(jax.jit, static_argnames=("steps", "batch"))
def _train(key, W0, mask, x, y, lr, steps: int, batch: int):
  def step(W, key):
    idx = jax.random.choice(key, x.shape[0], (batch,), replace=False)
    g = jax.grad(hinge_loss)(W, x[idx], y[idx], mask)
    return W - lr * g, None

  W, _ = jax.lax.scan(step, W0, jax.random.split(key, steps))
  return W


def train_xord(key, ks: Sequence[int], x, y, *, seeds: int, steps: int, lr: float, batch: int,
               init_std: float = 0.1) -> dict:
  """Every k of `ks` times every seed as one vmapped program of networks padded to max(ks) filters per
  sign. Returns numpy "W0" and "W" (len(ks), seeds, 2 K, 2) and "mask" (len(ks), 2 K)."""
  if min(ks) < 1:
    raise ValueError("every network needs at least one filter per sign")
  if not 1 <= batch <= len(y):
    raise ValueError(f"batch must lie in 1..{len(y)} (the training set), got {batch}")
  K = max(ks)
  mask = jnp.asarray(np.stack([channel_mask(k, K) for k in ks]))
  init_keys, train_keys = jax.random.split(key)
  W0 = init_std * jax.random.normal(init_keys, (len(ks), seeds, 2 * K, 2))
  keys = jax.random.split(train_keys, (len(ks), seeds))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  run = lambda k, w, m: _train(k, w, m, x, y, lr, steps, batch)
  W = jax.vmap(jax.vmap(run, in_axes=(0, 0, None)))(keys, W0, mask)
  return {"W0": np.asarray(W0), "W": np.asarray(W), "mask": np.asarray(mask)}


def accuracy(W, mask, x, y, weight=None) -> float:
  """(Weighted) fraction of points whose output sign is the label (an output of 0 counts as wrong)."""
  correct = np.asarray(jnp.sign(xord_net(jnp.asarray(W), jnp.asarray(x), jnp.asarray(mask))) == y, np.float64)
  return float(np.average(correct, weights=weight))


def nearest_centre_angles(filters, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """k-means (SciPy's `kmeans2`, k-means++ start) with `clusters` centres on the unit-normalised rows
  of `filters`; returns each filter's angle in degrees to its nearest (normalised) centre, its cluster
  label, and the normalised centres. Zero rows are left out of the fit and get angle NaN, label -1."""
  F = np.asarray(filters, np.float64)
  norms = np.linalg.norm(F, axis=1)
  alive = norms > 0
  U = F[alive] / norms[alive, None]
  clusters = min(clusters, len(U))
  centres, _ = vq.kmeans2(U, clusters, minit="++", seed=seed)
  centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-30)
  cos = np.clip(U @ centres.T, -1.0, 1.0)
  angles, labels = np.full(len(F), np.nan), np.full(len(F), -1)
  labels[alive] = np.argmax(cos, axis=1)
  angles[alive] = np.degrees(np.arccos(cos.max(axis=1)))
  return angles, labels, centres


def compress(filters, labels, centres) -> np.ndarray:
  """Each filter replaced by its cluster's centre scaled to the filter's norm (zero rows stay zero)."""
  F = np.asarray(filters, np.float64)
  out = np.zeros_like(F)
  alive = labels >= 0
  out[alive] = centres[labels[alive]] * np.linalg.norm(F[alive], axis=1, keepdims=True)
  return out

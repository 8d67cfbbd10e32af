"""Training dynamics as a time-varying graph (SPEC section 3, report section 3.2).

A layer at one epoch is a graph: one node per unit, sized by the norm of its weight vector, and an edge
between two units whose weight vectors point in similar directions. Its layout is d3-force's
simulation, compiled as one `lax.scan` over ticks:

  A = edge_weights(W, sigma=1.0, threshold=0.6)       # (m, m), zero diagonal
  xy = force_layout(A)                                 # (m, 2): 300 ticks from d3's phyllotaxis
  frames = layout_sequence([A_0, A_1, ...])            # (T, m, 2): each epoch from the previous one

How edge weights enter the layout: a link joins i and j wherever A_ij > 0 after the threshold, with
d3's default strength 1 / min(deg i, deg j), bias deg i / (deg i + deg j) and distance 30;
`weighted=True` multiplies the strength by A_ij. The weights also shade the edges in the drawings.

Links are applied one at a time in a fixed order (d3's Gauss-Seidel pass). The order groups the links
into rounds in which no two links share a node (a greedy edge colouring), so a round can be applied at
once with exactly the result of applying its links one by one: one scan step per round, not per link.
`link_schedule(A).order()` lists that order for sequential re-implementations.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import csgraph, csr_matrix

from redundancy_jax import pruning
from redundancy_jax.data import normalize
from redundancy_jax.models import prunable_layers

ALPHA_MIN = 0.001
ALPHA_DECAY = 1 - ALPHA_MIN ** (1 / 300)  # d3: alpha falls from 1 to alpha_min in 300 ticks
VELOCITY_DECAY = 0.6  # d3: v <- (1 - 0.4) v
CHARGE_DISTANCE_MIN = 1.0
PHYLLOTAXIS_RADIUS = 10.0
PHYLLOTAXIS_ANGLE = math.pi * (3 - math.sqrt(5))


class DynamicsError(ValueError):
  """A dynamics request that cannot be carried out (bad sigma, threshold, layer or data)."""


# ----------------------------------------------------------------------------- the graph


def unit_norms(W: np.ndarray) -> np.ndarray:
  """||w_i|| for the rows of `W` (m, n): the node sizes."""
  return np.linalg.norm(np.asarray(W, np.float64), axis=1)


def cosine_similarity(W: np.ndarray) -> np.ndarray:
  """X = U U^T for the normalised rows U of `W` (a zero row has similarity 0 with everything)."""
  W = np.asarray(W, np.float64)
  norms = np.linalg.norm(W, axis=1, keepdims=True)
  U = np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)
  return U @ U.T


def check_graph_args(sigma: float, threshold: float) -> None:
  if not sigma > 0:
    raise DynamicsError(f"sigma must be positive, got {sigma}")
  if not 0.0 <= threshold <= 1.0:
    raise DynamicsError(f"threshold must lie in [0, 1] (edge weights do), got {threshold}")


def edge_weights(W: np.ndarray, sigma: float, threshold: float, *, X: np.ndarray | None = None) -> np.ndarray:
  """A_ij = exp(-(1 - X_ij) / sigma^2) for i != j, set to 0 below `threshold`; zero diagonal.
  `X`: the cosine similarities of `W`, when already computed."""
  check_graph_args(sigma, threshold)
  A = np.exp(-(1.0 - (cosine_similarity(W) if X is None else X)) / sigma**2)
  A[A < threshold] = 0.0
  np.fill_diagonal(A, 0.0)
  return A


def auto_threshold(W: np.ndarray, sigma: float, mean_degree: float = 2.0) -> float:
  """The edge weight at which the graph of `W` keeps its round(mean_degree m / 2) strongest edges."""
  A = edge_weights(W, sigma, 0.0)
  weights = np.sort(A[np.triu_indices(len(A), 1)])[::-1]
  if len(weights) == 0:
    return 1.0
  return float(weights[min(max(int(round(mean_degree * len(A) / 2)), 1), len(weights)) - 1])


def weight_to_cosine(a: float, sigma: float) -> float:
  """The cosine similarity whose edge weight is `a` (inverse of the Gaussian kernel)."""
  return 1.0 + sigma**2 * math.log(a) if a > 0 else -math.inf


def strongest_edges(A: np.ndarray, max_per_node: int | None = None) -> np.ndarray:
  """Edges (i < j, A_ij > 0) as rows (i, j, A_ij); with `max_per_node`, only edges among the
  strongest `max_per_node` of at least one of their two nodes."""
  A = np.asarray(A)
  if max_per_node is not None:
    m = A.shape[0]
    k = min(max_per_node, m - 1)
    top = np.argpartition(-A, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((m, 0), int)
    keep = np.zeros_like(A, bool)
    keep[np.repeat(np.arange(m), top.shape[1]), top.ravel()] = True
    A = np.where(keep | keep.T, A, 0.0)
  i, j = np.nonzero(np.triu(A, 1) > 0)
  return np.stack([i, j, A[i, j]], 1) if len(i) else np.zeros((0, 3))


def cap_edges(A: np.ndarray, max_per_node: int) -> np.ndarray:
  """`A` with only the edges `strongest_edges(A, max_per_node)` keeps (symmetric)."""
  edges = strongest_edges(A, max_per_node)
  i, j = edges[:, 0].astype(int), edges[:, 1].astype(int)
  out = np.zeros_like(A)
  out[i, j] = out[j, i] = A[i, j]
  return out


# ----------------------------------------------------------------------------- link schedule


class Links(NamedTuple):
  """Links in application order, as rounds of node-disjoint links: every array is (rounds, width).

  Padding entries link node 0 to itself with strength 0 (no effect).
  """

  source: np.ndarray
  target: np.ndarray
  strength: np.ndarray
  bias: np.ndarray

  def order(self) -> np.ndarray:
    """(E, 2) int array: (source, target) of every real link, in the order they are applied."""
    real = self.strength.ravel() > 0
    return np.stack([self.source.ravel()[real], self.target.ravel()[real]], 1)


def _colour_edges(source: np.ndarray, target: np.ndarray, m: int) -> np.ndarray:
  """Greedy edge colouring (at most 2 max-degree - 1 colours): each edge, in order, takes the
  smallest colour free at both of its nodes. Colours used at a node are bits of a Python int."""
  used = [0] * m
  colours = np.empty(len(source), np.int64)
  for e, (s, t) in enumerate(zip(source.tolist(), target.tolist())):
    free = ~(used[s] | used[t])
    c = (free & -free).bit_length() - 1
    colours[e] = c
    used[s] |= 1 << c
    used[t] |= 1 << c
  return colours


def link_schedule(A: np.ndarray, *, weighted: bool = False, rounds: int = 1, width: int = 1) -> Links:
  """d3's links for the graph `A` (an edge i < j wherever A_ij > 0, source i, target j), grouped into
  rounds of node-disjoint links and padded to at least (`rounds`, `width`).

  Strength 1 / min(deg s, deg t) (times A_st when `weighted`), bias deg s / (deg s + deg t).
  """
  A = np.asarray(A, np.float64)
  if A.ndim != 2 or A.shape[0] != A.shape[1]:
    raise DynamicsError(f"adjacency must be a square matrix, got shape {A.shape}")
  m = A.shape[0]
  source, target = np.nonzero(np.triu(A, 1) > 0)
  degree = np.bincount(np.concatenate([source, target]), minlength=m).astype(np.float64)
  strength = 1.0 / np.minimum(degree[source], degree[target])
  if weighted:
    strength = strength * A[source, target]
  bias = degree[source] / (degree[source] + degree[target])
  colours = _colour_edges(source, target, m)
  order = np.lexsort((target, source, colours))  # by colour, then (source, target)
  colours = colours[order]
  counts = np.bincount(colours) if len(colours) else np.zeros(0, int)
  slot = np.arange(len(colours)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[colours] if len(colours) else colours
  shape = (max(rounds, len(counts), 1), max(width, counts.max() if len(counts) else 0, 1))
  out = [np.zeros(shape, np.int32), np.zeros(shape, np.int32), np.zeros(shape), np.zeros(shape)]
  for array, values in zip(out, (source, target, strength, bias)):
    array[colours, slot] = values[order]
  return Links(*out)


def _pad_links(links: Links, rounds: int, width: int) -> Links:
  r, b = links.source.shape
  return Links(*(np.pad(a, ((0, rounds - r), (0, width - b))) for a in links))


# ----------------------------------------------------------------------------- the simulation


def phyllotaxis(m: int) -> np.ndarray:
  """d3's initial positions: r_i = 10 sqrt(0.5 + i), theta_i = i pi (3 - sqrt 5)."""
  i = np.arange(m, dtype=np.float64)
  r, theta = PHYLLOTAXIS_RADIUS * np.sqrt(0.5 + i), i * PHYLLOTAXIS_ANGLE
  return np.stack([r * np.cos(theta), r * np.sin(theta)], 1)


def _charge(p: jax.Array, strength, alpha) -> jax.Array:
  """Exact all-pairs many-body force: dv_i = alpha sum_j s (p_j - p_i) / l_ij (l clamped below)."""
  dx = p[None, :, 0] - p[:, None, 0]  # dx[i, j] = x_j - x_i
  dy = p[None, :, 1] - p[:, None, 1]
  l = dx * dx + dy * dy
  l = jnp.where(l < CHARGE_DISTANCE_MIN**2, CHARGE_DISTANCE_MIN * jnp.sqrt(l), l)
  w = jnp.where(l > 0, strength * alpha / jnp.where(l > 0, l, 1.0), 0.0)  # l = 0: i == j or coincident
  # sum_j w_ij (p_j - p_i) as a matmul: on CPU 1.7x faster than reducing w * dx and w * dy
  return w @ p - jnp.sum(w, 1, keepdims=True) * p


def _link_pass(p: jax.Array, v: jax.Array, links: Links, alpha, distance) -> jax.Array:
  """d3's link force, one round of node-disjoint links per loop step (Gauss-Seidel across rounds)."""

  def one_round(r, v):
    s, t, k, b = links.source[r], links.target[r], links.strength[r], links.bias[r]
    D = (p[t] + v[t]) - (p[s] + v[s])
    L = jnp.sqrt(jnp.sum(D * D, 1))
    scale = jnp.where(L > 0, alpha * k * (L - distance) / jnp.where(L > 0, L, 1.0), 0.0)
    D = D * scale[:, None]
    return v.at[t].add(-b[:, None] * D).at[s].add((1 - b)[:, None] * D)

  return jax.lax.fori_loop(0, links.source.shape[0], one_round, v)


def _simulate(p, links, alpha, charge, distance, gravity, alpha_decay, *, ticks):
  """`ticks` d3 ticks from positions `p` (velocities 0) at `alpha`: one `lax.scan`."""

  def tick(carry, _):
    p, v, alpha = carry
    alpha = alpha + (0.0 - alpha) * alpha_decay
    v = v + _charge(p, charge, alpha)
    v = _link_pass(p, v, links, alpha, distance)
    v = v - p * (gravity * alpha)  # forceX / forceY towards the centre (0, 0)
    v = v * VELOCITY_DECAY
    return (p + v, v, alpha), None

  return jax.lax.scan(tick, (p, jnp.zeros_like(p), jnp.asarray(alpha, p.dtype)), length=ticks)[0][0]


_simulate_jit = jax.jit(_simulate, static_argnames="ticks")


def _jiggle(p: jax.Array, key: jax.Array | None) -> jax.Array:
  """d3's jiggle, (u - 0.5) 1e-6 per coordinate, when a key is given; otherwise `p` unchanged."""
  return p if key is None else p + (jax.random.uniform(key, p.shape, p.dtype) - 0.5) * 1e-6


def force_layout(
  A: np.ndarray,
  *,
  init_positions: np.ndarray | None = None,
  alpha: float = 1.0,
  ticks: int = 300,
  charge: float = -30.0,
  link_distance: float = 30.0,
  gravity: float = 0.1,
  key: jax.Array | None = None,
  weighted: bool = False,
  alpha_decay: float = ALPHA_DECAY,
) -> jax.Array:
  """Positions (m, 2) after `ticks` ticks of d3-force on the graph `A` (SPEC section 3).

  Starts from `init_positions` (default: d3's phyllotaxis) at rest. Deterministic; a `key` adds d3's
  1e-6 jiggle to the start. Runs in the default float precision (float64 under `jax.enable_x64`).
  """
  A = np.asarray(A)
  links = link_schedule(A, weighted=weighted)
  p0 = phyllotaxis(A.shape[0]) if init_positions is None else np.asarray(init_positions)
  if p0.shape != (A.shape[0], 2):
    raise DynamicsError(f"init_positions must have shape ({A.shape[0]}, 2), got {p0.shape}")
  p0 = _jiggle(jnp.asarray(p0), key)
  return _simulate_jit(
    p0, Links(*map(jnp.asarray, links)), alpha, charge, link_distance, gravity, alpha_decay, ticks=int(ticks)
  )


def align_positions(P: jax.Array, Q: jax.Array) -> jax.Array:
  """`P` rotated and translated to match `Q` best in least squares (2-d Procrustes, no reflection)."""
  P, Q = jnp.asarray(P), jnp.asarray(Q)
  pc, qc = P - P.mean(0), Q - Q.mean(0)
  sin = jnp.sum(pc[:, 0] * qc[:, 1] - pc[:, 1] * qc[:, 0])
  cos = jnp.sum(pc[:, 0] * qc[:, 0] + pc[:, 1] * qc[:, 1])
  theta = jnp.arctan2(sin, cos)
  c, s = jnp.cos(theta), jnp.sin(theta)
  return pc @ jnp.stack([jnp.stack([c, s]), jnp.stack([-s, c])]) + Q.mean(0)


def _sequence(p0, links, alphas, charge, distance, gravity, alpha_decay, *, ticks):
  def epoch(p, xs):
    links_t, alpha, align = xs
    new = _simulate(p, links_t, alpha, charge, distance, gravity, alpha_decay, ticks=ticks)
    new = jnp.where(align, align_positions(new, p), new)
    return new, new

  aligns = jnp.arange(alphas.shape[0]) > 0
  return jax.lax.scan(epoch, p0, (links, alphas, aligns))[1]


_sequence_jit = jax.jit(_sequence, static_argnames="ticks")


def layout_sequence(
  adjacencies: Sequence[np.ndarray],
  *,
  reheat_alpha: float = 0.3,
  init_positions: np.ndarray | None = None,
  alpha: float = 1.0,
  ticks: int = 300,
  charge: float = -30.0,
  link_distance: float = 30.0,
  gravity: float = 0.1,
  key: jax.Array | None = None,
  weighted: bool = False,
  alpha_decay: float = ALPHA_DECAY,
) -> jax.Array:
  """One layout per graph (epoch), (T, m, 2), compiled as one scan over epochs.

  The first is `force_layout(adjacencies[0], alpha=alpha)`; every later one starts from the previous
  positions (at rest: a cooled layout's velocities are about 0) re-heated to `reheat_alpha`, and is
  then rotated and translated onto the previous frame.
  """
  if len(adjacencies) == 0:
    raise DynamicsError("layout_sequence needs at least one graph")
  m = np.asarray(adjacencies[0]).shape[0]
  if any(np.shape(A) != (m, m) for A in adjacencies):
    raise DynamicsError(f"every graph must be {m} x {m}, got shapes {sorted({np.shape(A) for A in adjacencies})}")
  schedules = [link_schedule(A, weighted=weighted) for A in adjacencies]
  rounds = max(s.source.shape[0] for s in schedules)
  width = max(s.source.shape[1] for s in schedules)
  stacked = Links(*(jnp.asarray(np.stack(a)) for a in zip(*(_pad_links(s, rounds, width) for s in schedules))))
  p0 = phyllotaxis(m) if init_positions is None else np.asarray(init_positions)
  p0 = _jiggle(jnp.asarray(p0), key)
  alphas = jnp.asarray([alpha] + [reheat_alpha] * (len(adjacencies) - 1), p0.dtype)
  return _sequence_jit(p0, stacked, alphas, charge, link_distance, gravity, alpha_decay, ticks=int(ticks))


# ----------------------------------------------------------------------------- statistics


def unit_summary(W: np.ndarray, W0: np.ndarray, *, X: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Per unit: norm, distance from initialisation ||w_i - w0_i||, nearest neighbour by cosine and
  that cosine. `X`: the cosine similarities of `W`, when already computed."""
  X = cosine_similarity(W) if X is None else X.copy()
  np.fill_diagonal(X, -np.inf)
  nearest = np.argmax(X, 1) if len(X) > 1 else np.zeros(len(X), int)
  return {
    "norm": unit_norms(W),
    "init_distance": np.linalg.norm(np.asarray(W, np.float64) - np.asarray(W0, np.float64), axis=1),
    "nearest": nearest,
    "nearest_cosine": X[np.arange(len(X)), nearest] if len(X) > 1 else np.zeros(len(X)),
  }


def graph_statistics(W: np.ndarray, W0: np.ndarray, A: np.ndarray) -> dict[str, float]:
  """Connected components of the thresholded graph `A` and its largest one, edges, mean and spread
  of the unit norms, mean distance of the units from their initialisation `W0`."""
  count, labels = csgraph.connected_components(csr_matrix(np.asarray(A) > 0), directed=False)
  norms = unit_norms(W)
  return {
    "components": int(count),
    "largest_component": int(np.bincount(labels).max()),
    "edges": int(np.count_nonzero(np.triu(A, 1))),
    "norm_mean": float(norms.mean()),
    "norm_std": float(norms.std()),
    "init_distance_mean": float(np.linalg.norm(np.asarray(W, np.float64) - W0, axis=1).mean()),
  }


def repeated_units(
  activations_NxM: jax.Array, *, threshold: float = 0.5, max_samples: int = 50_000
) -> tuple[np.ndarray, np.ndarray]:
  """Repeat counts (m,) and Pearson correlations (m, m) of the units' activations (Casper et al.).

  The last axis indexes units; every other axis indexes samples (a convolution's spatial positions
  are samples), at most `max_samples` of them, evenly spaced. A unit's count is the number of other
  units with |r| >= `threshold`; a constant (dead) unit correlates 0 with everything.
  """
  a = jnp.asarray(activations_NxM, jnp.float32)
  a = a.reshape(-1, a.shape[-1])
  if a.shape[0] < 2:
    raise DynamicsError("repeated_units needs at least two samples")
  if a.shape[0] > max_samples:
    a = a[np.linspace(0, a.shape[0] - 1, max_samples).round().astype(int)]
  r = np.asarray(_correlation(a), np.float64)
  off = ~np.eye(r.shape[0], dtype=bool)
  return np.sum((np.abs(r) >= threshold) & off, 1), r


@jax.jit
def _correlation(a: jax.Array) -> jax.Array:
  a = a - a.mean(0)
  cov = a.T @ a
  std = jnp.sqrt(jnp.diag(cov))
  ok = std > 1e-6 * jnp.max(std)
  inv = jnp.where(ok, 1.0 / jnp.where(ok, std, 1.0), 0.0)
  return cov * inv[:, None] * inv[None, :]


@functools.partial(jax.jit, static_argnames="model")
def _logits(model, variables, x):
  return model.apply(variables, x)


@functools.partial(jax.jit, static_argnames=("model", "layer"))
def _layer_activations(model, variables, x, *, layer):
  return model.apply(variables, x, stop=layer)


def predict(model, variables: Mapping, x: np.ndarray, normalization=None, chunk: int = 500) -> np.ndarray:
  """Predicted labels, one compiled call per chunk (no convolution inside a loop body on CPU)."""
  out = []
  for start in range(0, len(x), chunk):
    xb = jnp.asarray(x[start : start + chunk])
    if normalization is not None:
      xb = normalize(xb, *normalization)
    out.append(np.asarray(jnp.argmax(_logits(model, variables, xb), -1)))
  return np.concatenate(out).astype(np.int32)


def removable_units(
  model,
  variables: Mapping,
  layer: str,
  x: np.ndarray,
  fractions: Sequence[float],
  key: jax.Array,
  *,
  seeds: int = 5,
  normalization: tuple | None = None,
) -> dict[str, np.ndarray]:
  """Fraction of predictions on `x` that do not change when a random fraction f of `layer`'s units
  is zeroed (no rescaling), for every f in `fractions` and `seeds` random orders.

  Batched with `pruning.sweep`: its labels are the unpruned network's predictions, so its accuracy
  is the agreement. Returns {"fractions", "agreement" (seeds, F), "mean" (F,), "std" (F,)}.
  """
  if layer not in prunable_layers(model):
    raise DynamicsError(f"unknown layer {layer!r}; valid layers: {', '.join(prunable_layers(model))}")
  fractions = np.asarray(fractions, np.float64)
  if fractions.ndim != 1 or len(fractions) == 0 or fractions.min() < 0 or fractions.max() > 1:
    raise DynamicsError("fractions must be a non-empty list of numbers in [0, 1]")
  W = pruning.unit_matrix(variables, layer)
  m = W.shape[0]
  levels, inverse = np.unique(np.round(fractions * m).astype(int), return_inverse=True)
  y = predict(model, variables, x, normalization)
  keys = jax.random.split(key, seeds)
  orders = {f"random/{i}": pruning.removal_order(W, "random", key=k) for i, k in enumerate(keys)}
  # few levels: masking the rest of the network beats the sweep's all-levels cumulative sums
  nested = None if len(levels) > m // 4 else False
  results = pruning.sweep(model, variables, layer, x, y, orders, levels, normalization=normalization, nested=nested)
  agreement = np.stack([results[f"random/{i}"]["accuracy"] for i in range(seeds)])[:, inverse]
  return {"fractions": fractions, "agreement": agreement, "mean": agreement.mean(0), "std": agreement.std(0)}


# ----------------------------------------------------------------------------- a whole run


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
  """What `analyse` computes for one layer of one training run."""

  layer: str = "fc1"
  sigma: float = 1.0
  threshold: float | None = None  # None: `auto_threshold` of the last epoch at `mean_degree`
  mean_degree: float = 2.0
  ticks: int = 300
  reheat_alpha: float = 0.3
  weighted: bool = False
  repeat_threshold: float = 0.5
  fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
  seeds: int = 5
  max_nodes: int = 2000  # larger layers: a warning, and edges capped to the strongest per node
  edges_per_node: int = 10
  seed: int = 0

  def check(self) -> "DynamicsConfig":
    check_graph_args(self.sigma, 0.0 if self.threshold is None else self.threshold)
    if self.mean_degree <= 0:
      raise DynamicsError(f"mean_degree must be positive, got {self.mean_degree}")
    if self.ticks <= 0 or self.seeds <= 0 or self.edges_per_node <= 0:
      raise DynamicsError("ticks, seeds and edges_per_node must be positive")
    if not 0 < self.reheat_alpha <= 1:
      raise DynamicsError(f"reheat_alpha must lie in (0, 1], got {self.reheat_alpha}")
    return self


def analyse(
  model,
  snapshots: Mapping[int, Mapping],
  cfg: DynamicsConfig,
  *,
  x: np.ndarray | None = None,
  normalization: tuple | None = None,
  log=logging.info,
) -> dict:
  """Everything about `cfg.layer` at every snapshot {epoch: params}: graphs, layouts, statistics.

  With data `x`, also the repeat counts of the units and their removability (skipped for models
  with BatchNorm, whose snapshots hold no batch statistics). Returns a dict of lists, numbers and
  numpy arrays (`rounded` turns it into JSON).
  """
  cfg.check()
  if cfg.layer not in prunable_layers(model):
    raise DynamicsError(f"unknown layer {cfg.layer!r}; valid layers: {', '.join(prunable_layers(model))}")
  epochs = sorted(snapshots)
  Ws = [np.asarray(pruning.unit_matrix(snapshots[e], cfg.layer), np.float64) for e in epochs]
  m = Ws[0].shape[0]
  cap = None
  if m > cfg.max_nodes:
    cap = cfg.edges_per_node
    logging.warning(
      "layer %s has %d units (> %d): edges are capped to the %d strongest per node", cfg.layer, m, cfg.max_nodes, cap
    )
  threshold = cfg.threshold
  if threshold is None:
    threshold = auto_threshold(Ws[-1], cfg.sigma, cfg.mean_degree)
    cosine = weight_to_cosine(threshold, cfg.sigma)
    log(f"threshold {threshold:.4f} (cosine {cosine:.4f}): mean degree {cfg.mean_degree} at epoch {epochs[-1]}")
  cosines = [cosine_similarity(W) for W in Ws]
  graphs = [edge_weights(W, cfg.sigma, threshold, X=X) for W, X in zip(Ws, cosines)]
  if cap is not None:
    graphs = [cap_edges(A, cap) for A in graphs]
  log(f"laying out {len(epochs)} graphs of {m} units ({sum(np.count_nonzero(A) // 2 for A in graphs)} edges in all)")
  positions = np.asarray(
    layout_sequence(graphs, reheat_alpha=cfg.reheat_alpha, ticks=cfg.ticks, weighted=cfg.weighted), np.float64
  )
  use_data = x is not None and not getattr(model, "batch_norm", False)
  xn = None if x is None or normalization is None else normalize(jnp.asarray(x), *normalization)
  key = jax.random.key(cfg.seed)
  frames, begin = [], time.time()
  for t, (epoch, W, A) in enumerate(zip(epochs, Ws, graphs)):
    frame = {"epoch": epoch, "positions": positions[t], **unit_summary(W, Ws[0], X=cosines[t])}
    frame["edges"] = strongest_edges(A)
    frame["stats"] = graph_statistics(W, Ws[0], A)
    if use_data:
      variables = {"params": snapshots[epoch]}
      acts = _layer_activations(model, variables, x if xn is None else xn, layer=cfg.layer)
      counts, _ = repeated_units(acts, threshold=cfg.repeat_threshold)
      frame["repeats"] = counts
      frame["stats"]["repeated_units"] = int(np.count_nonzero(counts))
      removable = removable_units(
        model, variables, cfg.layer, x, cfg.fractions, jax.random.fold_in(key, epoch), seeds=cfg.seeds,
        normalization=normalization,
      )
      frame["removable"] = {"mean": removable["mean"], "std": removable["std"]}
    frames.append(frame)
    if (t + 1) % 20 == 0 or t + 1 == len(epochs):
      rate = (t + 1) / (time.time() - begin)
      log(f"statistics: {t + 1}/{len(epochs)} epochs, {rate:.1f} epochs/s, ETA {(len(epochs) - t - 1) / rate:.0f}s")
  return {
    "layer": cfg.layer,
    "units": m,
    "fan_in": Ws[0].shape[1],
    "config": dataclasses.asdict(cfg),
    "sigma": cfg.sigma,
    "threshold": threshold,
    "threshold_cosine": weight_to_cosine(threshold, cfg.sigma),
    "edge_cap": cap,
    "fractions": list(cfg.fractions),
    "epochs": epochs,
    "frames": frames,
  }


def rounded(tree, decimals: int = 5):
  """`tree` with numpy arrays as lists, floating arrays rounded: what `storage.write_json` should write.
  Python floats (the threshold, the config) are kept exactly."""
  if isinstance(tree, dict):
    return {k: rounded(v, decimals) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [rounded(v, decimals) for v in tree]
  if isinstance(tree, (np.ndarray, jax.Array)):
    a = np.asarray(tree)
    return (np.round(a, decimals) if np.issubdtype(a.dtype, np.floating) else a).tolist()
  if isinstance(tree, np.floating):
    return float(tree)
  if isinstance(tree, np.integer):
    return int(tree)
  return tree

"""Training dynamics as a time-varying graph (DEFINITIONS.md section 3, report section 3.2).

A layer at one epoch is a graph: one node per unit, sized by the norm of its weight vector, and an edge
between two units whose weight vectors point in similar directions; `force_layout` lays the graphs out:

  A = edge_weights(W, sigma=1.0, threshold=0.6)           # (m, m), zero diagonal
  frames = force_layout.layout_sequence([A_0, A_1, ...])  # (T, m, 2): each epoch from the previous one

Past the threshold the edge weights shade the edges in the drawings (and, with
`LayoutParams(weighted=True)`, scale d3's link strengths). `analyse` adds per-epoch statistics, the
units' repeat counts and how many of them can be removed without changing the predictions.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize
from scipy.sparse import csgraph, csr_matrix

from redundancy_jax.analyses import force_layout, pruning
from redundancy_jax.analyses.units import cosine_similarity, init_draws, mean_pairwise_cosine, unit_matrix, unit_norms
from redundancy_jax.core import variants
from redundancy_jax.core.config import option
from redundancy_jax.models import topology
from redundancy_jax.core.errors import BadOption

PERMUTATIONS = 200  # random unit sets of the movement control (`summary`)

class DynamicsError(BadOption):
  """A dynamics request that cannot be carried out (bad sigma, threshold, layer or data)."""


# ----------------------------------------------------------------------------- the graph


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


def removable_units(
  model,
  variables: Mapping,
  layer: str,
  x: np.ndarray,
  fractions: Sequence[float],
  key: jax.Array,
  *,
  seeds: int = 5,
) -> dict[str, np.ndarray]:
  """Fraction of predictions on `x` that do not change when a random fraction f of `layer`'s units
  is zeroed (no rescaling), for every f in `fractions` and `seeds` random orders.

  Batched with `pruning.sweep`: its labels are the unpruned network's predictions, so its accuracy
  is the agreement. Returns {"fractions", "agreement" (seeds, F), "mean" (F,), "std" (F,)}.
  """
  topology.check(model, layer, prunable=True, error=DynamicsError)
  fractions = np.asarray(fractions, np.float64)
  if fractions.ndim != 1 or len(fractions) == 0 or fractions.min() < 0 or fractions.max() > 1:
    raise DynamicsError("fractions must be a non-empty list of numbers in [0, 1]")
  W = unit_matrix(variables, layer)
  m = W.shape[0]
  levels, inverse = np.unique(np.round(fractions * m).astype(int), return_inverse=True)
  y = variants.predict(model, variables, x)
  keys = jax.random.split(key, seeds)
  orders = {f"random/{i}": pruning.removal_order(W, "random", key=k) for i, k in enumerate(keys)}
  # few levels: masking the rest of the network beats the sweep's all-levels cumulative sums
  nested = None if len(levels) > m // 4 else False
  results = pruning.sweep(model, variables, layer, x, y, orders, levels, nested=nested)
  agreement = np.stack([results[f"random/{i}"]["accuracy"] for i in range(seeds)])[:, inverse]
  return {"fractions": fractions, "agreement": agreement, "mean": agreement.mean(0), "std": agreement.std(0)}


# ----------------------------------------------------------------------------- a whole run


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
  """What `analyse` computes for one layer of one training run."""

  layer: str = option("fc1", "Layer whose units are the nodes, any but the classifier "
                             "({prunable_layers}).")
  sigma: float = option(1.0, "Width of the Gaussian: A_ij = exp(-(1 - cos_ij) / sigma^2).")
  threshold: float | None = option(None, "Edges lighter than this are dropped (default: mean degree "
                                         "--mean_degree at the last epoch).")
  mean_degree: float = option(2.0, "Mean degree at the last epoch that picks the default threshold.")
  layout: force_layout.LayoutParams = option(force_layout.LayoutParams(), "The d3-force layout.")
  repeat_threshold: float = option(0.5, "|r| of two units' activations that makes them repeats of each other.")
  fractions: tuple[float, ...] = option((0.1, 0.25, 0.5, 0.75, 0.9), "Fractions of units removed at random for "
                                                                     "the removable-unit agreement.")
  seeds: int = option(5, "Random removal orders per fraction.")
  max_nodes: int = option(2000, "Larger layers: a warning, and edges capped to the strongest per node.")
  edges_per_node: int = option(10, "Strongest edges kept per node in a layer over --max_nodes.")
  order_seed: int = option(0, "Seed of the random removal orders.")

  def check(self) -> "DynamicsConfig":
    check_graph_args(self.sigma, 0.0 if self.threshold is None else self.threshold)
    if self.mean_degree <= 0:
      raise DynamicsError(f"mean_degree must be positive, got {self.mean_degree}")
    if self.seeds <= 0 or self.max_nodes <= 0 or self.edges_per_node <= 0:
      raise DynamicsError("seeds, max_nodes and edges_per_node must be positive")
    self.layout.check()
    return self


def analyse(
  model,
  snapshots: Mapping[int, Mapping],
  cfg: DynamicsConfig,
  *,
  x: np.ndarray | None = None,
  log=logging.info,
) -> dict:
  """Everything about `cfg.layer` at every snapshot {epoch: params}: graphs, layouts, statistics.

  With data `x`, also the repeat counts of the units and their removability (skipped for models
  with BatchNorm, whose snapshots hold no batch statistics). Returns a dict of lists, numbers and
  numpy arrays (`storage.jsonable` turns it into JSON).
  """
  cfg.check()
  topology.check(model, cfg.layer, prunable=True, error=DynamicsError)
  epochs = sorted(snapshots)
  Ws = [np.asarray(unit_matrix(snapshots[e], cfg.layer), np.float64) for e in epochs]
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
  positions = np.asarray(force_layout.layout_sequence(graphs, cfg.layout), np.float64)
  use_data = x is not None and not any(l.norm for l in topology.of(model))
  x_device = jnp.asarray(x) if use_data else None  # moved to the device once, not once per epoch
  key = jax.random.key(cfg.order_seed)
  frames, begin = [], time.time()
  for t, (epoch, W, A) in enumerate(zip(epochs, Ws, graphs)):
    frame = {"epoch": epoch, "positions": positions[t], **unit_summary(W, Ws[0], X=cosines[t])}
    frame["edges"] = strongest_edges(A)
    frame["stats"] = graph_statistics(W, Ws[0], A)
    if use_data:
      variables = {"params": snapshots[epoch]}
      acts = topology.activations(model, variables, x_device, cfg.layer)
      counts, _ = repeated_units(acts, threshold=cfg.repeat_threshold)
      frame["repeats"] = counts
      frame["stats"]["repeated_units"] = int(np.count_nonzero(counts))
      removable = removable_units(
        model, variables, cfg.layer, x, cfg.fractions, jax.random.fold_in(key, epoch), seeds=cfg.seeds
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


def summary(result: dict, removable_fraction: float = 0.25) -> dict:
  """One layer's graph at the first and the last snapshot, JSON-ready: edges, components, the largest
  component, units outside it, repeated units, mean pairwise cosine, and how far units moved
  (||w_T - w_0|| / ||w_0||) for the smallest-norm `removable_fraction` at convergence (what magnitude
  pruning removes first) against the others. `result` is `analyse`'s with the unit matrices
  `weights_first` and `weights_last` added."""
  W0, W = np.asarray(result["weights_first"]), np.asarray(result["weights_last"])
  m = len(W)

  def graph(frame, weights):
    stats = frame["stats"]
    return {
      "epoch": int(frame["epoch"]), "edges": stats["edges"], "components": stats["components"],
      "largest_component": stats["largest_component"], "outside_largest": m - stats["largest_component"],
      "repeated_units": stats.get("repeated_units"), "mean_cosine": mean_pairwise_cosine(weights),
    }

  moved = unit_norms(W - W0) / np.maximum(unit_norms(W0), 1e-30)
  quarter = max(1, int(round(removable_fraction * m)))
  smallest = np.argsort(unit_norms(W), kind="stable")[:quarter]
  rest = np.setdiff1d(np.arange(m), smallest)
  rng = np.random.default_rng(0)  # the control: the same difference for random sets of units of that size
  shuffled = [rng.permutation(moved) for _ in range(PERMUTATIONS)]
  random_gaps = [np.median(p[quarter:]) - np.median(p[:quarter]) for p in shuffled] if len(rest) else [0.0]
  last = result["frames"][-1]
  return {
    "units": m, "threshold": float(result["threshold"]), "threshold_cosine": float(result["threshold_cosine"]),
    "frames": len(result["frames"]), "init": graph(result["frames"][0], W0), "converged": graph(last, W),
    "movement_smallest_quarter": float(np.median(moved[smallest])),
    "movement_others": float(np.median(moved[rest])) if len(rest) else None,
    "movement_gap_control_std": float(np.std(random_gaps)),
    "removable_agreement": None if "removable" not in last else {
      "fractions": list(result["fractions"]), "mean": np.asarray(last["removable"]["mean"]).tolist()},
  }


def init_control(kernel_shape, sigma: float, threshold: float, draws: int = 16) -> dict:
  """The graph statistics of `summary` on `draws` layers of `kernel_shape` drawn by the models'
  initialiser, at edge weight `threshold`: {statistic: [mean, std] over draws}, the spread a trained
  layer's change must exceed (the claims' control)."""
  values = {"mean_cosine": [], "edges": [], "largest_fraction": []}
  for W in init_draws(kernel_shape, draws):
    stats = graph_statistics(W, W, edge_weights(W, sigma, threshold))
    values["mean_cosine"].append(mean_pairwise_cosine(W))
    values["edges"].append(stats["edges"])
    values["largest_fraction"].append(stats["largest_component"] / len(W))
  return {k: [float(np.mean(v)), float(np.std(v))] for k, v in values.items()}


def compare_runs(a: dict, b: dict) -> dict:
  """How two runs' graphs of one layer differ at convergence (the report's Figure 5). `a` and `b` are
  `analyse` results with `weights_first` and `weights_last`. Units are matched by index (both runs start
  from the same weights for this layer) and by the best one-to-one matching on cosine similarity
  (Hungarian algorithm); the graphs are compared at run a's threshold by their edge sets (Jaccard index),
  components, largest component and repeated units."""
  cos = cosine_similarity(a["weights_last"], b["weights_last"])
  rows, cols = optimize.linear_sum_assignment(-cos)
  ea = {tuple(e[:2]) for e in np.asarray(a["frames"][-1]["edges"]).astype(int).tolist()}
  eb = {tuple(e[:2]) for e in np.asarray(b["frames"][-1]["edges"]).astype(int).tolist()}
  sa, sb = a["frames"][-1]["stats"], b["frames"][-1]["stats"]
  return {
    "units": int(len(cos)),
    "threshold": float(a["threshold"]),
    "same_unit_cosine": float(np.mean(np.diag(cos))),
    "matched_cosine": float(np.mean(cos[rows, cols])),
    "matched_to_self": float(np.mean(cols == rows)),
    "init_to_trained_cosine": float(np.mean(np.diag(cosine_similarity(a["weights_first"], a["weights_last"])))),
    "edge_jaccard": float(len(ea & eb) / max(1, len(ea | eb))),
    "runs": [{k: s.get(k) for k in ("edges", "components", "largest_component", "repeated_units")} for s in (sa, sb)],
  }

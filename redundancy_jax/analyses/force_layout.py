"""d3-force's simulation of a graph, compiled as one `lax.scan` over ticks (DEFINITIONS.md section 3).

  xy = force_layout(A)                                 # (m, 2): 300 ticks from d3's phyllotaxis
  frames = layout_sequence([A_0, A_1, ...])            # (T, m, 2): each graph from the previous layout
  xy = force_layout(A, LayoutParams(ticks=60, weighted=True))

How edge weights enter the layout: a link joins i and j wherever A_ij > 0, with d3's default strength
1 / min(deg i, deg j), bias deg i / (deg i + deg j) and distance 30; `weighted=True` multiplies the
strength by A_ij.

Links are applied one at a time in a fixed order (d3's Gauss-Seidel pass). The order groups the links
into rounds in which no two links share a node (a greedy edge colouring), so a round can be applied at
once with exactly the result of applying its links one by one: one scan step per round, not per link.
`link_schedule(A).order()` lists that order for sequential re-implementations.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.core.config import option
from redundancy_jax.core.errors import BadOption

ALPHA_MIN = 0.001
ALPHA_DECAY = 1 - ALPHA_MIN ** (1 / 300)  # d3: alpha falls from 1 to alpha_min in 300 ticks
VELOCITY_DECAY = 0.6  # d3: v <- (1 - 0.4) v
CHARGE_DISTANCE_MIN = 1.0
PHYLLOTAXIS_RADIUS = 10.0
PHYLLOTAXIS_ANGLE = math.pi * (3 - math.sqrt(5))


class LayoutError(BadOption):
  """A layout request that cannot be carried out (bad parameters, graphs or start positions)."""


@dataclasses.dataclass(frozen=True)
class LayoutParams:
  """d3-force's parameters (its defaults), shared by `force_layout` and `layout_sequence`."""

  alpha: float = option(1.0, "The first layout's starting alpha.")
  ticks: int = option(300, "d3-force ticks per epoch.")
  charge: float = option(-30.0, "Many-body strength (negative: repulsion).")
  link_distance: float = option(30.0, "Link rest length.")
  gravity: float = option(0.1, "forceX / forceY strength towards (0, 0).")
  weighted: bool = option(False, "Multiply d3's link strength by the edge weight.")
  alpha_decay: float = option(ALPHA_DECAY, "Alpha decay per tick (d3: from 1 to 0.001 in 300 ticks).")
  reheat_alpha: float = option(0.3, "Alpha each later epoch's layout restarts from.")

  def check(self) -> "LayoutParams":
    if self.ticks < 0 or int(self.ticks) != self.ticks:
      raise LayoutError(f"ticks must be a non-negative integer, got {self.ticks!r}")
    if not 0 < self.reheat_alpha <= 1:
      raise LayoutError(f"reheat_alpha must lie in (0, 1], got {self.reheat_alpha}")
    if not 0 < self.alpha_decay <= 1:
      raise LayoutError(f"alpha_decay must lie in (0, 1], got {self.alpha_decay}")
    return self


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
    raise LayoutError(f"adjacency must be a square matrix, got shape {A.shape}")
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


def _start(m: int, init_positions: np.ndarray | None, key: jax.Array | None) -> jax.Array:
  """The start positions (m, 2): `init_positions` or d3's phyllotaxis, jiggled when a key is given."""
  p0 = phyllotaxis(m) if init_positions is None else np.asarray(init_positions)
  if p0.shape != (m, 2):
    raise LayoutError(f"init_positions must have shape ({m}, 2), got {p0.shape}")
  return _jiggle(jnp.asarray(p0), key)


def _forces(params: LayoutParams) -> tuple:
  """The traced force arguments of `_simulate` after `p`, `links` and `alpha`."""
  return params.charge, params.link_distance, params.gravity, params.alpha_decay


def force_layout(
  A: np.ndarray,
  params: LayoutParams = LayoutParams(),
  *,
  init_positions: np.ndarray | None = None,
  key: jax.Array | None = None,
) -> jax.Array:
  """Positions (m, 2) after `params.ticks` ticks of d3-force on the graph `A` (DEFINITIONS.md section 3).

  Starts from `init_positions` (default: d3's phyllotaxis) at rest, at `params.alpha`. Deterministic;
  a `key` adds d3's 1e-6 jiggle to the start. Runs in the default float precision (float64 under
  `jax.enable_x64`).
  """
  params.check()
  A = np.asarray(A)
  links = Links(*map(jnp.asarray, link_schedule(A, weighted=params.weighted)))
  p0 = _start(A.shape[0], init_positions, key)
  return _simulate_jit(p0, links, params.alpha, *_forces(params), ticks=int(params.ticks))


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
  params: LayoutParams = LayoutParams(),
  *,
  init_positions: np.ndarray | None = None,
  key: jax.Array | None = None,
) -> jax.Array:
  """One layout per graph (epoch), (T, m, 2), compiled as one scan over epochs.

  The first is `force_layout(adjacencies[0], params)`; every later one starts from the previous
  positions (at rest: a cooled layout's velocities are about 0) re-heated to `params.reheat_alpha`,
  and is then rotated and translated onto the previous frame.
  """
  params.check()
  if len(adjacencies) == 0:
    raise LayoutError("layout_sequence needs at least one graph")
  m = np.asarray(adjacencies[0]).shape[0]
  if any(np.shape(A) != (m, m) for A in adjacencies):
    raise LayoutError(f"every graph must be {m} x {m}, got shapes {sorted({np.shape(A) for A in adjacencies})}")
  schedules = [link_schedule(A, weighted=params.weighted) for A in adjacencies]
  rounds = max(s.source.shape[0] for s in schedules)
  width = max(s.source.shape[1] for s in schedules)
  stacked = Links(*(jnp.asarray(np.stack(a)) for a in zip(*(_pad_links(s, rounds, width) for s in schedules))))
  p0 = _start(m, init_positions, key)
  alphas = jnp.asarray([params.alpha] + [params.reheat_alpha] * (len(adjacencies) - 1), p0.dtype)
  return _sequence_jit(p0, stacked, alphas, *_forces(params), ticks=int(params.ticks))

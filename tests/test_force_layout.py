"""d3-force layout (redundancy_jax.analyses.force_layout): against a NumPy float64 transcription of the layout
equations of docs/DEFINITIONS.md section 3, the link schedule by hand, and properties of the layouts of simple
graphs."""

import math

import jax
import numpy as np
import pytest
import scipy.stats

from redundancy_jax.analyses import force_layout as layout
from redundancy_jax.analyses.force_layout import LayoutParams


# ----------------------------------------------------------------------------- NumPy transcription


def _reference_layout(A, ticks, *, alpha=1.0, p0=None, weighted=False):
  """The d3-force equations of docs/DEFINITIONS.md section 3 ("Layout"), literally, in float64 (`weighted`:
  each link's strength times A_st, the layout's option); links one at a time in the schedule's order (the
  only thing taken from the code under test)."""
  A = np.asarray(A, np.float64)
  m = len(A)
  i = np.arange(m)
  r, theta = 10 * np.sqrt(0.5 + i), i * np.pi * (3 - np.sqrt(5))
  p = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) if p0 is None else np.array(p0, np.float64)
  v = np.zeros_like(p)
  deg = np.count_nonzero(np.triu(A, 1) > 0, 1) + np.count_nonzero(np.triu(A, 1) > 0, 0)
  order = layout.link_schedule(A).order()
  decay = 1 - 0.001 ** (1 / 300)
  for _ in range(ticks):
    alpha += (0 - alpha) * decay
    for a in range(m):  # charge, exact
      for b in range(m):
        if a == b:
          continue
        d = p[b] - p[a]
        l = d @ d
        if l < 1:
          l = math.sqrt(l)
        if l > 0:
          v[a] += d * -30.0 * alpha / l
    for s, t in order:  # links, Gauss-Seidel
      k = 1 / min(deg[s], deg[t]) * (A[s, t] if weighted else 1.0)
      b = deg[s] / (deg[s] + deg[t])
      D = p[t] + v[t] - p[s] - v[s]
      L = math.sqrt(D @ D)
      if L > 0:
        D = D * alpha * k * (L - 30.0) / L
        v[t] -= b * D
        v[s] += (1 - b) * D
    v += (0 - p) * 0.1 * alpha  # gravity
    v *= 0.6
    p = p + v
  return p


def _random_graph(m, p, seed):
  rng = np.random.default_rng(seed)
  upper = np.triu(rng.random((m, m)) < p, 1)
  W = np.where(upper, rng.uniform(0.3, 1.0, (m, m)), 0.0)
  return W + W.T


@pytest.mark.parametrize(
  "m, density, ticks, weighted", [(9, 0.35, 60, False), (12, 0.25, 40, True), (6, 0.0, 30, False)]
)
def test_force_layout_matches_numpy_transcription_in_float64(m, density, ticks, weighted):
  A = _random_graph(m, density, seed=m)
  with jax.enable_x64(True):
    got = np.asarray(layout.force_layout(A, LayoutParams(ticks=ticks, weighted=weighted)))
    assert got.dtype == np.float64
  np.testing.assert_allclose(got, _reference_layout(A, ticks, weighted=weighted), atol=1e-5, rtol=0)


def test_force_layout_from_given_positions_and_alpha_matches_transcription():
  A = _random_graph(8, 0.4, seed=3)
  p0 = np.random.default_rng(0).normal(0, 40, (8, 2))
  with jax.enable_x64(True):
    got = np.asarray(layout.force_layout(A, LayoutParams(alpha=0.3, ticks=25), init_positions=p0))
  np.testing.assert_allclose(got, _reference_layout(A, 25, alpha=0.3, p0=p0), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- schedules and simple graphs


def test_link_schedule_rounds_are_node_disjoint_and_cover_every_edge_once():
  A = _random_graph(30, 0.3, seed=1)
  links = layout.link_schedule(A, rounds=40, width=20)
  assert links.source.shape[0] >= 40 and links.source.shape[1] >= 20  # padded
  edges = set()
  for s, t, k in zip(links.source, links.target, links.strength):
    real = k > 0
    nodes = np.concatenate([s[real], t[real]])
    assert len(nodes) == len(set(nodes.tolist()))  # no node twice in a round
    edges |= {(int(a), int(b)) for a, b in zip(s[real], t[real])}
  assert edges == {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(A, 1)))}
  assert len(links.order()) == len(edges)
  assert layout.link_schedule(A).source.shape[0] <= 2 * (A > 0).sum(1).max() - 1  # greedy colouring bound


def test_layout_sequence_pads_schedules_and_aligns_frames():
  A_small, A_big = _random_graph(10, 0.2, seed=4), _random_graph(10, 0.8, seed=5)
  frames = np.asarray(layout.layout_sequence([A_small, A_big, A_big], LayoutParams(ticks=50)))
  # the first frame is force_layout itself, although its schedule was padded to the bigger graph's
  np.testing.assert_allclose(frames[0], np.asarray(layout.force_layout(A_small, LayoutParams(ticks=50))), atol=1e-4)
  # later frames: from the previous positions, re-heated, then aligned (same graph: little motion)
  assert np.abs(frames[2] - frames[1]).max() < np.abs(frames[1] - frames[0]).max()
  # alignment: undoing a rotation and a translation exactly
  P = frames[1]
  c, s = np.cos(1.1), np.sin(1.1)
  moved = P @ np.array([[c, s], [-s, c]]) + np.array([50.0, -20.0])
  np.testing.assert_allclose(np.asarray(layout.align_positions(moved, P)), P, atol=1e-3)


def test_two_disconnected_cliques_end_up_separated():
  A = np.zeros((12, 12))
  A[:6, :6] = A[6:, 6:] = 1.0
  np.fill_diagonal(A, 0)
  xy = np.asarray(layout.force_layout(A))
  centres = xy[:6].mean(0), xy[6:].mean(0)
  radii = [np.linalg.norm(xy[s] - c, axis=1).max() for s, c in zip((slice(0, 6), slice(6, 12)), centres)]
  assert np.linalg.norm(centres[0] - centres[1]) > sum(radii)  # the discs holding the cliques are disjoint
  d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  assert d[:6, 6:].min() > np.median(d[:6, :6][np.triu_indices(6, 1)]) / 2


def test_chain_is_laid_out_as_a_path():
  m = 10
  A = np.zeros((m, m))
  A[np.arange(m - 1), np.arange(1, m)] = A[np.arange(1, m), np.arange(m - 1)] = 1.0
  steps = np.linalg.norm(np.diff(np.asarray(layout.force_layout(A)), axis=0), axis=1)
  assert np.all((steps > 20) & (steps < 45)), steps  # links near their distance of 30
  xy = np.asarray(layout.force_layout(A, LayoutParams(gravity=0.0)))  # d3's gravity of 0.1 folds a long chain
  steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
  assert np.all((steps > 20) & (steps < 45)), steps
  d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  hops = np.abs(np.arange(m)[:, None] - np.arange(m)[None])
  assert d[hops >= 2].min() > d[hops == 1].max()  # no fold: only chain neighbours are close
  upper = np.triu_indices(m, 1)
  assert scipy.stats.spearmanr(hops[upper], d[upper]).statistic > 0.9  # distance grows along the chain


def test_force_layout_is_deterministic_and_key_only_jiggles():
  A = _random_graph(15, 0.3, seed=2)
  key = jax.random.key(1)
  with jax.enable_x64(True):  # in float32 a 1e-6 jiggle of coordinates up to ~40 is mostly rounded away
    plain = np.asarray(layout.force_layout(A))
    np.testing.assert_array_equal(plain, np.asarray(layout.force_layout(A)))
    start = np.asarray(layout.force_layout(A, LayoutParams(ticks=0)))  # 0 ticks: the start itself
    np.testing.assert_array_equal(start, layout.phyllotaxis(15))
    moved = np.abs(np.asarray(layout.force_layout(A, LayoutParams(ticks=0), key=key)) - start)
    assert moved.max() <= 0.5e-6 + 1e-12 and moved.min() > 0  # every coordinate, by at most 1e-6 / 2
    keyed = np.asarray(layout.force_layout(A, key=key))
    np.testing.assert_array_equal(keyed, np.asarray(layout.force_layout(A, key=key)))
  assert not np.array_equal(keyed, plain)


def test_link_schedule_by_hand():
  A = np.zeros((5, 5))
  for (i, j), w in {(0, 1): 0.9, (0, 2): 0.8, (0, 3): 0.7, (2, 3): 0.6}.items():
    A[i, j] = A[j, i] = w  # degrees 3, 1, 2, 2, 0 (node 4 alone)
  links = layout.link_schedule(A)
  # greedy colours in (source, target) order: (0,1) 0, (0,2) 1, (0,3) 2, (2,3) 0
  assert links.order().tolist() == [[0, 1], [2, 3], [0, 2], [0, 3]]
  real = links.strength > 0
  np.testing.assert_allclose(links.strength[real], [1, 1 / 2, 1 / 2, 1 / 2])  # 1 / min(deg s, deg t)
  np.testing.assert_allclose(links.bias[real], [3 / 4, 2 / 4, 3 / 5, 3 / 5])  # deg s / (deg s + deg t)
  weighted = layout.link_schedule(A, weighted=True)
  np.testing.assert_allclose(weighted.strength[weighted.strength > 0], [0.9, 0.6 / 2, 0.8 / 2, 0.7 / 2])


@pytest.mark.parametrize(
  "params, word",
  [(LayoutParams(ticks=-1), "ticks"), (LayoutParams(reheat_alpha=0.0), "reheat_alpha"),
   (LayoutParams(alpha_decay=1.5), "alpha_decay")],
)
def test_bad_layout_requests_name_the_problem(params, word):
  with pytest.raises(layout.LayoutError, match=word):
    layout.force_layout(np.zeros((3, 3)), params)
  with pytest.raises(layout.LayoutError, match=word):
    layout.layout_sequence([np.zeros((3, 3))], params)


def test_bad_graphs_and_start_positions_are_rejected():
  with pytest.raises(layout.LayoutError, match="init_positions must have shape"):
    layout.force_layout(np.zeros((3, 3)), init_positions=np.zeros((4, 2)))
  with pytest.raises(layout.LayoutError, match="square"):
    layout.force_layout(np.zeros((3, 4)))
  with pytest.raises(layout.LayoutError, match="every graph must be 3 x 3"):
    layout.layout_sequence([np.zeros((3, 3)), np.zeros((4, 4))])

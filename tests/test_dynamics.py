"""Training-dynamics graph: d3-force against a NumPy transcription, properties, statistics, the page in
a real headless browser, and a smoke test of experiments.dynamics."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.stats

from redundancy_jax import dynamics, storage
from redundancy_jax.models import create_model, init_variables
from redundancy_jax.plots import dynamics as plots

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


# ----------------------------------------------------------------------------- NumPy transcription


def _reference_layout(A, ticks, *, alpha=1.0, p0=None, weighted=False):
  """SPEC section 3's d3-force equations, literally, in float64; links one at a time in the schedule's
  order (the only thing taken from the code under test)."""
  A = np.asarray(A, np.float64)
  m = len(A)
  i = np.arange(m)
  r, theta = 10 * np.sqrt(0.5 + i), i * np.pi * (3 - np.sqrt(5))
  p = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) if p0 is None else np.array(p0, np.float64)
  v = np.zeros_like(p)
  deg = np.count_nonzero(np.triu(A, 1) > 0, 1) + np.count_nonzero(np.triu(A, 1) > 0, 0)
  order = dynamics.link_schedule(A).order()
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
    got = np.asarray(dynamics.force_layout(A, ticks=ticks, weighted=weighted))
    assert got.dtype == np.float64
  np.testing.assert_allclose(got, _reference_layout(A, ticks, weighted=weighted), atol=1e-5, rtol=0)


def test_force_layout_from_given_positions_and_alpha_matches_transcription():
  A = _random_graph(8, 0.4, seed=3)
  p0 = np.random.default_rng(0).normal(0, 40, (8, 2))
  with jax.enable_x64(True):
    got = np.asarray(dynamics.force_layout(A, init_positions=p0, alpha=0.3, ticks=25))
  np.testing.assert_allclose(got, _reference_layout(A, 25, alpha=0.3, p0=p0), atol=1e-5, rtol=0)


def test_link_schedule_rounds_are_node_disjoint_and_cover_every_edge_once():
  A = _random_graph(30, 0.3, seed=1)
  links = dynamics.link_schedule(A, rounds=40, width=20)
  assert links.source.shape[0] >= 40 and links.source.shape[1] >= 20  # padded
  edges = set()
  for s, t, k in zip(links.source, links.target, links.strength):
    real = k > 0
    nodes = np.concatenate([s[real], t[real]])
    assert len(nodes) == len(set(nodes.tolist()))  # no node twice in a round
    edges |= {(int(a), int(b)) for a, b in zip(s[real], t[real])}
  assert edges == {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(A, 1)))}
  assert len(links.order()) == len(edges)
  assert dynamics.link_schedule(A).source.shape[0] <= 2 * (A > 0).sum(1).max() - 1  # greedy colouring bound


def test_layout_sequence_pads_schedules_and_aligns_frames():
  A_small, A_big = _random_graph(10, 0.2, seed=4), _random_graph(10, 0.8, seed=5)
  frames = np.asarray(dynamics.layout_sequence([A_small, A_big, A_big], ticks=50))
  # the first frame is force_layout itself, although its schedule was padded to the bigger graph's
  np.testing.assert_allclose(frames[0], np.asarray(dynamics.force_layout(A_small, ticks=50)), atol=1e-4)
  # later frames: from the previous positions, re-heated, then aligned (same graph: little motion)
  assert np.abs(frames[2] - frames[1]).max() < np.abs(frames[1] - frames[0]).max()
  # alignment: undoing a rotation and a translation exactly
  P = frames[1]
  c, s = np.cos(1.1), np.sin(1.1)
  moved = P @ np.array([[c, s], [-s, c]]) + np.array([50.0, -20.0])
  np.testing.assert_allclose(np.asarray(dynamics.align_positions(moved, P)), P, atol=1e-3)


def test_two_disconnected_cliques_end_up_separated():
  A = np.zeros((12, 12))
  A[:6, :6] = A[6:, 6:] = 1.0
  np.fill_diagonal(A, 0)
  xy = np.asarray(dynamics.force_layout(A))
  centres = xy[:6].mean(0), xy[6:].mean(0)
  radii = [np.linalg.norm(xy[s] - c, axis=1).max() for s, c in zip((slice(0, 6), slice(6, 12)), centres)]
  assert np.linalg.norm(centres[0] - centres[1]) > sum(radii)  # the discs holding the cliques are disjoint
  d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  assert d[:6, 6:].min() > np.median(d[:6, :6][np.triu_indices(6, 1)]) / 2


def test_chain_is_laid_out_as_a_path():
  m = 10
  A = np.zeros((m, m))
  A[np.arange(m - 1), np.arange(1, m)] = A[np.arange(1, m), np.arange(m - 1)] = 1.0
  steps = np.linalg.norm(np.diff(np.asarray(dynamics.force_layout(A)), axis=0), axis=1)
  assert np.all((steps > 20) & (steps < 45)), steps  # links near their distance of 30
  xy = np.asarray(dynamics.force_layout(A, gravity=0.0))  # d3's gravity of 0.1 folds a long chain
  steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
  assert np.all((steps > 20) & (steps < 45)), steps
  d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
  hops = np.abs(np.arange(m)[:, None] - np.arange(m)[None])
  assert d[hops >= 2].min() > d[hops == 1].max()  # no fold: only chain neighbours are close
  upper = np.triu_indices(m, 1)
  assert scipy.stats.spearmanr(hops[upper], d[upper]).statistic > 0.9  # distance grows along the chain


def test_force_layout_is_deterministic_and_key_only_jiggles():
  A = _random_graph(15, 0.3, seed=2)
  a, b = np.asarray(dynamics.force_layout(A)), np.asarray(dynamics.force_layout(A))
  np.testing.assert_array_equal(a, b)
  c = np.asarray(dynamics.force_layout(A, key=jax.random.key(1)))
  assert np.isfinite(c).all() and c.shape == (15, 2)


# ----------------------------------------------------------------------------- graph and statistics


def test_edge_weights_by_hand():
  W = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # cosines: 1/sqrt2, 0, 1/sqrt2
  a = math.exp(-(1 - 1 / math.sqrt(2)))  # 0.7461
  expected = np.array([[0, a, 0], [a, 0, a], [0, a, 0]])  # exp(-1) = 0.368 < 0.5 dropped
  np.testing.assert_allclose(dynamics.edge_weights(W, 1.0, 0.5), expected, atol=1e-12)
  full = dynamics.edge_weights(W, 0.5, 0.0)  # sigma 0.5: exp(-4 (1 - cos))
  np.testing.assert_allclose(full[0, 2], math.exp(-4.0), atol=1e-12)
  np.testing.assert_allclose(dynamics.unit_norms(W), [1, math.sqrt(2), 2])
  np.testing.assert_allclose(dynamics.weight_to_cosine(a, 1.0), 1 / math.sqrt(2), atol=1e-12)


@pytest.mark.parametrize(
  "sigma, threshold, word",
  [(0.0, 0.5, "sigma"), (-1.0, 0.5, "sigma"), (1.0, 1.5, "threshold"), (1.0, -0.1, "threshold")],
)
def test_edge_weights_rejects_bad_arguments(sigma, threshold, word):
  with pytest.raises(dynamics.DynamicsError, match=word):
    dynamics.edge_weights(np.eye(3), sigma, threshold)


def test_statistics_by_hand():
  A = np.zeros((6, 6))
  for i, j in [(0, 1), (1, 2), (3, 4)]:
    A[i, j] = A[j, i] = 0.9
  W0 = np.zeros((6, 2))
  W = np.array([[3, 4], [0, 1], [0, 1], [1, 0], [0, 2], [0, 0]], float)  # norms 5 1 1 1 2 0
  stats = dynamics.graph_statistics(W, W0, A)
  norms = np.array([5, 1, 1, 1, 2, 0.0])
  assert stats["components"] == 3 and stats["largest_component"] == 3 and stats["edges"] == 3
  assert stats["norm_mean"] == pytest.approx(norms.mean()) and stats["norm_std"] == pytest.approx(norms.std())
  assert stats["init_distance_mean"] == pytest.approx(norms.mean())  # W0 = 0
  summary = dynamics.unit_summary(W, W0)
  assert summary["nearest"][1] == 2 and summary["nearest_cosine"][1] == pytest.approx(1.0)
  assert summary["nearest"][3] == 0 and summary["nearest_cosine"][3] == pytest.approx(0.6)
  edges = dynamics.strongest_edges(A)
  assert edges.tolist() == [[0, 1, 0.9], [1, 2, 0.9], [3, 4, 0.9]]


def test_strongest_edges_cap_keeps_each_nodes_best():
  A = _random_graph(20, 1.0, seed=7)
  capped = dynamics.strongest_edges(A, max_per_node=2)
  for i in range(20):
    best = set(np.argsort(-A[i])[:2].tolist())
    kept = {int(b) if int(a) == i else int(a) for a, b, _ in capped if i in (int(a), int(b))}
    assert best <= kept
  assert len(capped) <= 40


def test_repeated_units_match_numpy_corrcoef():
  rng = np.random.default_rng(0)
  acts = rng.normal(size=(300, 6))
  acts[:, 1] = acts[:, 0] * 2 + 0.3 * rng.normal(size=300)  # repeats unit 0
  acts[:, 2] = -acts[:, 0] + 0.5 * rng.normal(size=300)  # anti-correlated: |r| counts
  counts, r = dynamics.repeated_units(acts)
  expected = np.corrcoef(acts, rowvar=False)
  np.testing.assert_allclose(r, expected, atol=1e-5)
  off = ~np.eye(6, dtype=bool)
  np.testing.assert_array_equal(counts, ((np.abs(expected) >= 0.5) & off).sum(1))
  assert counts[0] == 2
  # conv activations: every spatial position is a sample; a dead unit repeats nothing
  conv = rng.normal(size=(4, 5, 5, 3))
  conv[..., 2] = 0.0
  counts, r = dynamics.repeated_units(conv)
  flat = conv.reshape(-1, 3)
  np.testing.assert_allclose(r[:2, :2], np.corrcoef(flat[:, :2], rowvar=False), atol=1e-5)
  assert counts[2] == 0 and np.all(r[2] == 0)
  # the sample cap
  counts, r = dynamics.repeated_units(conv, max_samples=40)
  assert r.shape == (3, 3)


def _small_lenet():
  model = create_model("lenet", width=0.1)  # 30 and 10 hidden units
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  x = np.random.default_rng(0).integers(0, 255, (96, 28, 28, 1), dtype=np.uint8)
  return model, variables, x


def test_removable_units_agreement():
  model, variables, x = _small_lenet()
  out = dynamics.removable_units(
    model, variables, "fc1", x, [0.0, 0.5, 0.5, 1.0], jax.random.key(0), seeds=3, normalization=((0.13,), (0.31,))
  )
  assert out["agreement"].shape == (3, 4)
  np.testing.assert_array_equal(out["agreement"][:, 0], 1.0)  # nothing removed: every prediction agrees
  np.testing.assert_array_equal(out["agreement"][:, 1], out["agreement"][:, 2])  # repeated fraction
  assert np.all((out["agreement"] >= 0) & (out["agreement"] <= 1))
  with pytest.raises(dynamics.DynamicsError, match="valid layers: fc1, fc2"):
    dynamics.removable_units(model, variables, "fc3", x, [0.5], jax.random.key(0))


# ----------------------------------------------------------------------------- the page in a browser


def _synthetic_run(max_nodes=2000):
  """analyse() on a small LeNet whose fc1 units drift towards three directions over four epochs."""
  model, variables, x = _small_lenet()
  rng = np.random.default_rng(1)
  params = variables["params"]
  kernel = np.asarray(params["fc1"]["kernel"])
  targets = rng.normal(0, 0.05, (784, 3))[:, np.arange(kernel.shape[1]) % 3]
  snapshots = {}
  for epoch in range(4):
    mix = epoch / 3 * 0.8
    snapshots[epoch] = {**params, "fc1": {**params["fc1"], "kernel": (1 - mix) * kernel + mix * targets}}
  cfg = dynamics.DynamicsConfig(
    layer="fc1", threshold=0.45, ticks=60, seeds=2, max_nodes=max_nodes, edges_per_node=3
  )
  return dynamics.analyse(model, snapshots, cfg, x=x, normalization=((0.13,), (0.31,)), log=lambda s: None)


def test_analyse_run_structure_and_edge_cap():
  result = _synthetic_run(max_nodes=10)
  assert result["epochs"] == [0, 1, 2, 3] and result["units"] == 30 and result["edge_cap"] == 3
  last = result["frames"][-1]
  assert last["positions"].shape == (30, 2) and len(last["repeats"]) == 30
  assert last["stats"]["components"] < result["frames"][0]["stats"]["components"]  # clusters formed
  degree = np.bincount(np.asarray(last["edges"])[:, :2].astype(int).ravel(), minlength=30)
  assert last["stats"]["edges"] == len(last["edges"])
  json.dumps(dynamics.rounded(result))  # JSON-ready
  with pytest.raises(dynamics.DynamicsError, match="valid layers: fc1, fc2"):
    dynamics.analyse(create_model("lenet", width=0.1), {0: {}}, dynamics.DynamicsConfig(layer="conv1"))
  assert degree.max() <= 30


def test_analyse_conv_layer_filters_are_units():
  model = create_model("conv2", width=0.125)  # 8 filters per convolution
  snapshots = {e: init_variables(model, jax.random.key(e), (16, 16, 3))["params"] for e in range(2)}
  result = dynamics.analyse(model, snapshots, dynamics.DynamicsConfig(layer="conv2", ticks=20), log=lambda s: None)
  assert result["units"] == 8 and result["fan_in"] == 3 * 3 * 8
  assert result["frames"][1]["positions"].shape == (8, 2) and "repeats" not in result["frames"][1]  # no data given


def _chromium(url, tmp_path, *extra):
  profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
  cmd = [
    CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000", "--window-size=1300,1100", *extra, url,
  ]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def _status(dom: str) -> dict:
  match = re.search(r'<pre id="status"[^>]*>(.*?)</pre>', dom, re.S)
  assert match, dom[:2000]
  return json.loads(match.group(1).replace("&quot;", '"'))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
  folder = tmp_path_factory.mktemp("page")
  result = _synthetic_run(max_nodes=10)
  path = plots.write_page(str(folder / "dynamics.html"), [("synthetic", result)])
  return path, result


def test_page_is_self_contained(page):
  text = open(page[0], encoding="utf-8").read()
  assert "http://" not in text and "https://" not in text and "<script src" not in text
  assert 'id="data"' in text and "Warning" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium): page not tested")
def test_page_in_headless_chromium(page, tmp_path):
  path, result = page
  url = "file://" + os.path.abspath(path)
  first = _chromium(url + "#epoch=0", tmp_path, "--dump-dom")
  assert first.returncode == 0, first.stderr[-2000:]
  status = _status(first.stdout)
  assert status["ready"] and status["errors"] == 0 and status["epoch"] == 0, status
  assert "Uncaught" not in first.stderr, first.stderr[-2000:]
  assert "3 strongest edges" in first.stdout  # the cap is stated on the page
  last = _status(_chromium(url + "#epoch=3", tmp_path, "--dump-dom").stdout)
  assert last["epoch"] == 3 and last["errors"] == 0
  assert last["checksum"] != status["checksum"]  # the epoch slider changes the drawing
  strict = _status(_chromium(url + "#epoch=3&threshold=0.99", tmp_path, "--dump-dom").stdout)
  assert strict["edges_drawn"] < last["edges_drawn"]  # the threshold slider filters edges
  hovered = _chromium(url + "#epoch=3&hover=5", tmp_path, "--dump-dom").stdout
  card = re.search(r'<div id="card"[^>]*>(.*?)</div>', hovered, re.S).group(1)
  for word in ("unit 5", "norm", "distance from initialisation", "nearest by cosine", "repeat count"):
    assert word in card, card
  shot = tmp_path / "page.png"
  done = _chromium(url + "#epoch=3", tmp_path, f"--screenshot={shot}")
  assert shot.exists(), done.stderr[-2000:]
  from PIL import Image

  pixels = np.asarray(Image.open(shot).convert("RGB"), np.float32)
  assert pixels.std() > 10 and np.mean(pixels.min(-1) < 200) > 0.01  # not blank
  assert np.any((pixels[..., 2] > 150) & (pixels[..., 0] < 80))  # blue nodes drawn


def test_frames_and_figures(tmp_path):
  result = _synthetic_run()
  runs = [("a", result), ("b", result)]
  written = plots.render_frames(runs, str(tmp_path), mp4=False)
  assert len(written["frames"]) == 4 and os.path.getsize(written["gif"][0]) > 1000
  png, pdf = plots.save_init_vs_converged(runs, str(tmp_path / "init_vs_converged.png"))
  assert os.path.exists(png) and os.path.exists(pdf)


# ----------------------------------------------------------------------------- the experiment


def _experiment(*args, cwd=None):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run(
    [sys.executable, "-m", "experiments.dynamics", *args], capture_output=True, text=True, cwd=root, timeout=300
  )


def test_experiment_smoke(tmp_path):
  workdir = tmp_path / "lenet"
  done = _experiment(
    "--model=lenet", "--layer=fc1", f"--workdir={workdir}", "--steps=300", "--width=0.25", "--ticks=40",
    "--num_examples=200", "--data_source=bundled", f"--compare_workdir={workdir}",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  out = workdir / "dynamics_fc1"
  for name in ("dynamics.html", "dynamics.json", "dynamics.gif", "init_vs_converged.png", "frames/epoch_00000.png"):
    assert (out / name).exists(), name
  saved = storage.read_json(str(out / "dynamics.json"))
  assert len(saved["runs"]) == 2  # side by side with --compare_workdir
  run = saved["runs"][0]
  assert run["epochs"] == [0, 1, 2, 3] and run["units"] == 75
  assert len(run["frames"][0]["positions"]) == 75 and "components" in run["frames"][-1]["stats"]


def test_experiment_bad_input(tmp_path):
  done = _experiment("--sigma=0", f"--workdir={tmp_path}")
  assert done.returncode != 0 and "sigma must be positive" in done.stderr
  storage.write_json(str(tmp_path / "results.json"), {})
  storage.save_tree(str(tmp_path / "trained_variables.npz"), {"a": np.zeros(1)})
  done = _experiment(f"--workdir={tmp_path}")
  assert done.returncode != 0 and "no parameter snapshots" in done.stderr and "experiments.train" in done.stderr
  done = _experiment(f"--workdir={tmp_path / 'new'}", "--layer=fc9")
  assert done.returncode != 0 and "valid layers: fc1, fc2" in done.stderr

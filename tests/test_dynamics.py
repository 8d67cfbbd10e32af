"""Training-dynamics graph: edge weights and caps, statistics, removable units, the page (in a real
headless browser when there is one), and experiments.dynamics' main on a tiny run. The layout itself is
tested in test_force_layout.py."""

import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import dynamics as script
from redundancy_jax.analyses import dynamics, units
from redundancy_jax.analyses.dynamics_run import DynamicsRunConfig
from redundancy_jax.analyses.force_layout import LayoutParams
from redundancy_jax.core import storage
from redundancy_jax.core.config import TrainConfig, override
from redundancy_jax.core.runs import Run
from redundancy_jax.models import create_model, init_variables
from redundancy_jax.plots import dynamics as plots

# ----------------------------------------------------------------------------- graph and statistics


def test_edge_weights_by_hand():
  W = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # cosines: 1/sqrt2, 0, 1/sqrt2
  a = math.exp(-(1 - 1 / math.sqrt(2)))  # 0.7461
  expected = np.array([[0, a, 0], [a, 0, a], [0, a, 0]])  # exp(-1) = 0.368 < 0.5 dropped
  np.testing.assert_allclose(dynamics.edge_weights(W, 1.0, 0.5), expected, atol=1e-12)
  full = dynamics.edge_weights(W, 0.5, 0.0)  # sigma 0.5: exp(-4 (1 - cos))
  np.testing.assert_allclose(full[0, 2], math.exp(-4.0), atol=1e-12)
  np.testing.assert_allclose(units.unit_norms(W), [1, math.sqrt(2), 2])
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


def _top_k(A, k):
  """(m, m) bool: j is among the k heaviest entries of row i (numpy sort; the weights have no ties)."""
  top = np.zeros(A.shape, bool)
  np.put_along_axis(top, np.argsort(-A, axis=1)[:, :k], True, 1)
  return top


def test_edge_cap_keeps_the_edges_in_a_top_k_of_either_node():
  A = dynamics.edge_weights(np.random.default_rng(7).normal(size=(25, 6)), 1.0, 0.3)
  k = 3
  top = _top_k(A, k)
  capped = dynamics.strongest_edges(A, max_per_node=k)
  kept = {(int(a), int(b)) for a, b, _ in capped}
  dropped = {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(A, 1)))} - kept
  assert len(kept) >= 25 * k / 2 and len(dropped) > len(kept)  # the cap has work to do
  assert all(top[a, b] or top[b, a] for a, b in kept)
  assert not any(top[a, b] or top[b, a] for a, b in dropped)
  np.testing.assert_array_equal(capped[:, 2], A[capped[:, 0].astype(int), capped[:, 1].astype(int)])
  np.testing.assert_array_equal(dynamics.cap_edges(A, k), np.where(top | top.T, A, 0.0))


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
  model = create_model("lenet", width=0.1, mean=(0.13,), std=(0.31,))  # 30 and 10 hidden units
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  x = np.random.default_rng(0).integers(0, 255, (96, 28, 28, 1), dtype=np.uint8)
  return model, variables, x


def _predict(model, params, x):
  return np.asarray(jnp.argmax(model.apply({"params": params}, jnp.asarray(x)), -1))


def _without_fc1_units(params, k):
  """`params` with fc1's units 0..k-1 removed: fc2's input rows for them zeroed."""
  kernel = np.where(np.arange(30)[:, None] < k, 0.0, params["fc2"]["kernel"])
  return {**params, "fc2": {**params["fc2"], "kernel": kernel}}


def test_removable_units_agreement():
  model, variables, x = _small_lenet()
  params = jax.tree.map(np.asarray, variables["params"])
  y = _predict(model, params, x)
  out = dynamics.removable_units(model, variables, "fc1", x, [0.0, 0.3, 0.7, 1.0], jax.random.key(0), seeds=3)
  assert out["agreement"].shape == (3, 4)
  np.testing.assert_array_equal(out["agreement"][:, 0], 1.0)  # nothing removed: every prediction agrees
  # everything removed: the network predicts one constant class, agreeing where y is that class
  removed = _predict(model, _without_fc1_units(params, 30), x)
  np.testing.assert_array_equal(out["agreement"][:, 3], np.mean(removed == y))
  assert len(set(out["agreement"][:, 1].tolist())) > 1  # three seeds, three different random orders
  np.testing.assert_allclose(out["mean"], out["agreement"].mean(0))
  with pytest.raises(dynamics.DynamicsError, match="prunable layers: fc1, fc2"):
    dynamics.removable_units(model, variables, "fc3", x, [0.5], jax.random.key(0))


@pytest.mark.parametrize("fractions", [[0.0, 0.3, 0.7, 1.0], np.linspace(0, 1, 11).tolist()])  # masks, running sums
def test_removable_units_match_zeroing_units_by_hand(fractions):
  """fc1's 30 units made identical: removing any k of them is the same network, so every random order
  must agree with zeroing the first k units' rows of fc2 in a loop here; biases make the answer depend on k."""
  model, variables, x = _small_lenet()
  params = jax.tree.map(np.asarray, variables["params"])
  rng = np.random.default_rng(3)
  params = {
    "fc1": {"kernel": np.repeat(params["fc1"]["kernel"][:, :1], 30, 1), "bias": np.full(30, 0.1, np.float32)},
    "fc2": {"kernel": np.repeat(params["fc2"]["kernel"][:1], 30, 0), "bias": rng.normal(0, 1, 10).astype(np.float32)},
    "fc3": {"kernel": params["fc3"]["kernel"], "bias": rng.normal(0, 0.5, 10).astype(np.float32)},
  }
  y = _predict(model, params, x)
  expected = [np.mean(_predict(model, _without_fc1_units(params, round(f * 30)), x) == y) for f in fractions]
  assert len(set(expected)) >= 3  # removal changes predictions, more with more units removed
  out = dynamics.removable_units(model, {"params": params}, "fc1", x, fractions, jax.random.key(0), seeds=3)
  np.testing.assert_array_equal(out["agreement"], np.tile(expected, (3, 1)))


# ----------------------------------------------------------------------------- a whole run


def _drifting_snapshots():
  """A small LeNet whose fc1 units drift towards three directions over four epochs: (model, {epoch:
  params}, x)."""
  model, variables, x = _small_lenet()
  rng = np.random.default_rng(1)
  params = variables["params"]
  kernel = np.asarray(params["fc1"]["kernel"])
  targets = rng.normal(0, 0.05, (784, 3))[:, np.arange(kernel.shape[1]) % 3]
  snapshots = {}
  for epoch in range(4):
    mix = epoch / 3 * 0.8
    snapshots[epoch] = {**params, "fc1": {**params["fc1"], "kernel": (1 - mix) * kernel + mix * targets}}
  return model, snapshots, x


def _config(**overrides):
  return dynamics.DynamicsConfig(layer="fc1", threshold=0.45, layout=LayoutParams(ticks=60), seeds=2, **overrides)


def _synthetic_run(max_nodes=2000):
  """analyse() of `_drifting_snapshots`, with data; over `max_nodes` units, 3 edges per node."""
  model, snapshots, x = _drifting_snapshots()
  cfg = _config(max_nodes=max_nodes, edges_per_node=3)
  return dynamics.analyse(model, snapshots, cfg, x=x, log=lambda s: None)


def _edge_set(edges):
  return {(int(a), int(b)) for a, b, _ in np.asarray(edges).reshape(-1, 3)}


def test_analyse_run_structure_and_edge_cap():
  result = _synthetic_run(max_nodes=10)
  assert result["epochs"] == [0, 1, 2, 3] and result["units"] == 30 and result["edge_cap"] == 3
  assert result["config"]["layout"]["ticks"] == 60 and result["config"]["max_nodes"] == 10
  last = result["frames"][-1]
  assert last["positions"].shape == (30, 2) and len(last["repeats"]) == 30
  assert last["stats"]["components"] < result["frames"][0]["stats"]["components"]  # clusters formed
  assert last["stats"]["edges"] == len(last["edges"])
  json.dumps(storage.jsonable(result, 4))  # JSON-ready
  # the last graph, capped here: an edge stays where it is among the 3 heaviest of either of its nodes
  model, snapshots, _ = _drifting_snapshots()
  A = dynamics.edge_weights(np.asarray(snapshots[3]["fc1"]["kernel"], np.float64).T, 1.0, 0.45)
  top = _top_k(A, 3)
  capped = np.where(top | top.T, A, 0.0)
  assert _edge_set(last["edges"]) == _edge_set(dynamics.strongest_edges(capped))
  degree = np.bincount(np.asarray(last["edges"])[:, :2].astype(int).ravel(), minlength=30)
  np.testing.assert_array_equal(degree, np.count_nonzero(capped, 1))
  assert degree.min() >= min(3, np.count_nonzero(A, 1).min()) and np.count_nonzero(A) > np.count_nonzero(capped)
  # within max_nodes: no cap, every edge over the threshold
  uncapped = dynamics.analyse(model, snapshots, _config(edges_per_node=3), log=lambda s: None)
  assert uncapped["edge_cap"] is None
  assert _edge_set(uncapped["frames"][-1]["edges"]) == _edge_set(dynamics.strongest_edges(A))
  with pytest.raises(dynamics.DynamicsError, match="prunable layers: fc1, fc2"):
    dynamics.analyse(create_model("lenet", width=0.1), {0: {}}, dynamics.DynamicsConfig(layer="conv1"))


def test_analyse_conv_layer_filters_are_units():
  model = create_model("conv2", width=0.125)  # 8 filters per convolution
  snapshots = {e: init_variables(model, jax.random.key(e), (16, 16, 3))["params"] for e in range(2)}
  cfg = dynamics.DynamicsConfig(layer="conv2", layout=LayoutParams(ticks=20))
  result = dynamics.analyse(model, snapshots, cfg, log=lambda s: None)
  assert result["units"] == 8 and result["fan_in"] == 3 * 3 * 8
  assert result["frames"][1]["positions"].shape == (8, 2) and "repeats" not in result["frames"][1]  # no data given


# ----------------------------------------------------------------------------- the page


def _status(dom: str) -> dict:
  """The drawn state the page's script leaves in the data-* attributes of its (empty) status element."""
  match = re.search(r'<div id="status"([^>]*)>(.*?)</div>', dom, re.S)
  assert match, dom[:2000]
  assert match.group(2) == "", match.group(2)  # no text on the page: no debug line, no script error
  attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', match.group(1)))
  return {
    "ready": attrs["ready"] == "1", "errors": int(attrs["errors"]), "epoch": int(attrs["epoch"]),
    "threshold": float(attrs["threshold"]), "checksum": int(attrs["checksum"]), "edges_drawn": int(attrs["edges-drawn"]),
  }


@pytest.fixture(scope="module")
def page(tmp_path_factory):
  folder = tmp_path_factory.mktemp("page")
  result = _synthetic_run(max_nodes=10)
  path = plots.write_page(str(folder / "dynamics.html"), [("synthetic", result)])
  return path, result


def test_page_is_self_contained_and_warns_only_of_a_cap(page, tmp_path):
  path, result = page
  text = open(path, encoding="utf-8").read()
  assert "http://" not in text and "https://" not in text and "<script src" not in text
  assert 'id="data"' in text and "function drawRun" in text  # data and script inline
  assert 'class="warn"' in text and "only its 3 strongest edges" in text  # 30 units > max_nodes 10
  uncapped = plots.write_page(str(tmp_path / "uncapped.html"), [("synthetic", {**result, "edge_cap": None})])
  assert 'class="warn"' not in open(uncapped, encoding="utf-8").read()


def test_page_in_headless_chromium(page, tmp_path, chromium):
  path, result = page
  url = "file://" + os.path.abspath(path)
  first = chromium(url + "#epoch=0", "--dump-dom")
  assert first.returncode == 0, first.stderr[-2000:]
  status = _status(first.stdout)
  assert status["ready"] and status["errors"] == 0 and status["epoch"] == 0, status
  assert "Uncaught" not in first.stderr, first.stderr[-2000:]
  assert "3 strongest edges" in first.stdout  # the cap is stated on the page
  assert '{"ready"' not in first.stdout  # no debug JSON line on the page
  last = _status(chromium(url + "#epoch=3", "--dump-dom").stdout)
  assert last["epoch"] == 3 and last["errors"] == 0
  assert last["checksum"] != status["checksum"]  # the epoch slider changes the drawing
  strict = _status(chromium(url + "#epoch=3&threshold=0.99", "--dump-dom").stdout)
  assert strict["edges_drawn"] < last["edges_drawn"]  # the threshold slider filters edges
  hovered = chromium(url + "#epoch=3&hover=5", "--dump-dom").stdout
  card = re.search(r'<div id="card"[^>]*>(.*?)</div>', hovered, re.S).group(1)
  for word in ("unit 5", "norm", "distance from initialisation", "nearest by cosine", "repeat count"):
    assert word in card, card
  shot = tmp_path / "page.png"
  done = chromium(url + "#epoch=3", f"--screenshot={shot}")
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


@pytest.mark.e2e
def test_experiment_smoke(tmp_path):
  workdir = tmp_path / "lenet"
  cfg = override(DynamicsRunConfig(), model="lenet", layer="fc1", workdir=str(workdir), steps=300, width=0.25,
                 ticks=40, num_examples=200, data_source="bundled", compare_workdir=str(workdir))
  script.main(cfg)
  out = workdir / "dynamics_fc1"
  for name in ("dynamics.html", "dynamics.json", "dynamics.gif", "init_vs_converged.png", "frames/epoch_00000.png"):
    assert (out / name).exists(), name
  saved = storage.read_json(str(out / "dynamics.json"))
  assert len(saved["runs"]) == 2 and saved["experiment"] == "dynamics"  # side by side with --compare_workdir
  run = saved["runs"][0]
  assert run["epochs"] == [0, 1, 2, 3] and run["units"] == 75
  assert len(run["frames"][0]["positions"]) == 75 and "components" in run["frames"][-1]["stats"]


def test_experiment_bad_input(tmp_path):
  with pytest.raises(dynamics.DynamicsError, match="sigma must be positive"):
    script.main(override(DynamicsRunConfig(), sigma=0.0, workdir=str(tmp_path)))
  run = Run(str(tmp_path))  # a trained run whose snapshots are gone
  storage.write_json(run.config_path, TrainConfig(model="lenet").resolve().to_json())
  storage.write_json(run.results_path, {})
  storage.save_tree(run.trained_path, {"a": np.zeros(1)})
  with pytest.raises(FileNotFoundError, match="no parameter snapshots.*experiments.train"):
    script.main(override(DynamicsRunConfig(), workdir=str(tmp_path)))
  with pytest.raises(dynamics.DynamicsError, match="prunable layers: fc1, fc2"):
    script.main(override(DynamicsRunConfig(), workdir=str(tmp_path / "new"), layer="fc9"))
  assert not (tmp_path / "new").exists()

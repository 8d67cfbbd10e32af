import itertools
import math
import os
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redundancy_jax.analyses import criteria, prune_sweep, pruning, units
from redundancy_jax.core import config, data, train
from redundancy_jax.core.runs import Run
from redundancy_jax.models import create_model, init_variables

# ----------------------------------------------------------------------------- orders by hand

# rows: w0, w1 share a direction (exact tie), w2 points elsewhere, w3 is zero, w4 is orthogonal to all.
W_HAND = jnp.array([[2.0, 0, 0], [1, 0, 0], [0, 3, 0], [0, 0, 0], [0, 0, 1]])


def test_magnitude_orders_by_hand():
  # norms 2, 1, 3, 0, 1: ascending with the tie (1, 4) going to the lower index
  assert pruning.removal_order(W_HAND, "max_mag").tolist() == [3, 1, 4, 0, 2]
  assert pruning.removal_order(W_HAND, "min_mag").tolist() == [2, 0, 1, 4, 3]


def test_frame_potential_orders_by_hand():
  # c = [2, 2, 1, 0, 1]. max_fp removes the smallest c: 3 (zero row, c=0), 2, 4 (tie at 1 -> lower
  # index), then 0 (c0 = c1 = 2 -> lower index), after which c1 drops to 1.
  assert pruning.removal_order(W_HAND, "max_fp").tolist() == [3, 2, 4, 0, 1]
  # min_fp removes the largest: 0 (tie with 1), then c = [., 1, 1, 0, 1] -> 1, 2, 4, and the zero row last.
  assert pruning.removal_order(W_HAND, "min_fp").tolist() == [0, 1, 2, 4, 3]


def _frame_potential(W):
  norms = np.linalg.norm(W, axis=1, keepdims=True)
  U = np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)
  return float(np.sum((U @ U.T) ** 2))


def _brute_force_fp_order(W, maximise):
  """Reference: at each step try every removal and keep the best remaining frame potential."""
  remaining, order = list(range(len(W))), []
  while remaining:
    scores = [_frame_potential(W[[j for j in remaining if j != i]]) for i in remaining]
    best = max(scores) if maximise else min(scores)
    tied = [i for i, s in zip(remaining, scores) if abs(s - best) <= 1e-9 * max(1.0, abs(best))]
    pick = min(tied)
    order.append(pick)
    remaining.remove(pick)
  return order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_frame_potential_matches_brute_force(seed):
  W = np.random.default_rng(seed).standard_normal((9, 4))
  for criterion, maximise in (("max_fp", True), ("min_fp", False)):
    order = pruning.removal_order(jnp.asarray(W, jnp.float32), criterion).tolist()
    assert order == _brute_force_fp_order(W, maximise), criterion


def _fsum_fp_order(W, remove_largest):
  """Reference greedy in float64: Gram entries from correctly rounded dot products, every step's
  contributions re-summed with math.fsum, ties (exactly equal sums) to the lowest index."""
  W = np.asarray(W, np.float64)
  norms = np.array([math.sqrt(math.fsum(w * w)) for w in W])
  U = np.divide(W, norms[:, None], out=np.zeros_like(W), where=norms[:, None] > 0)
  m = len(W)
  G = np.zeros((m, m))
  for i in range(m):
    for j in range(i, m):
      G[i, j] = G[j, i] = math.fsum(U[i] * U[j]) ** 2
    G[i, i] = 1.0 if norms[i] > 0 else 0.0
  alive, order = list(range(m)), []
  while alive:
    c = [math.fsum(G[i, alive]) for i in alive]
    best = max(c) if remove_largest else min(c)
    pick = alive[c.index(best)]  # first (lowest index) of the exactly tied
    order.append(pick)
    alive.remove(pick)
  return order


def _exact_fp_order(W, remove_largest):
  """Reference in exact rational arithmetic: G_ij = <w_i, w_j>^2 / (|w_i|^2 |w_j|^2) of the stored
  weights, so scaled duplicates tie exactly; ties to the lowest index."""
  rows = [[Fraction(float(v)) for v in w] for w in np.asarray(W)]
  sq = [sum(v * v for v in w) for w in rows]
  dot = lambda a, b: sum(u * v for u, v in zip(a, b))
  m = len(rows)
  G = [[dot(rows[i], rows[j]) ** 2 / (sq[i] * sq[j]) if sq[i] and sq[j] else Fraction(0) for j in range(m)]
       for i in range(m)]
  alive, order = list(range(m)), []
  while alive:
    c = [sum(G[i][j] for j in alive) for i in alive]
    pick = alive[c.index(max(c) if remove_largest else min(c))]
    order.append(pick)
    alive.remove(pick)
  return order


# exact duplicates (0, 3), scaled duplicates (1, 4: x3; 2, 6: x0.5), a zero row (5), two generic rows
W_TIES = np.array(
  [[1, 2, 0, -1], [0, 1, 1, 0], [3, 0, -2, 1], [1, 2, 0, -1], [0, 3, 3, 0], [0, 0, 0, 0], [1.5, 0, -1, 0.5],
   [2, -1, 1, 1], [-1, 1, 2, 3]], np.float32,
)


@pytest.mark.parametrize("criterion, remove_largest", [("max_fp", False), ("min_fp", True)])
def test_fp_orders_with_exact_ties_match_rational_reference(criterion, remove_largest):
  expected = _exact_fp_order(W_TIES, remove_largest)
  assert pruning.removal_order(W_TIES, criterion).tolist() == expected
  # two non-zero units left always tie (c = 1 + G_ij each): the lower index goes first
  if 5 not in expected[-2:]:
    assert expected[-2] < expected[-1]
  else:  # min_fp keeps the zero row (c = 0) to the end
    assert expected[-1] == 5
  # shuffling the rows permutes the order the same way, except where ties are decided by index
  W = np.array([[1.0, 0], [0, 1.0]], np.float32)  # two orthogonal units: an exact tie at every step
  assert pruning.removal_order(W, criterion).tolist() == [0, 1]


@pytest.mark.parametrize("shape, seed", [((64, 200), 0), ((300, 784), 1), ((300, 784), 2)])
def test_fp_orders_at_realistic_sizes_match_fsum_reference(shape, seed):
  m, n = shape
  W = (np.random.default_rng(seed).standard_normal(shape) * np.sqrt(2 / (m + n))).astype(np.float32)
  for criterion, remove_largest in (("max_fp", False), ("min_fp", True)):
    order = pruning.removal_order(W, criterion)
    assert order.dtype == np.int32
    assert order.tolist() == _fsum_fp_order(W, remove_largest), criterion


def test_orders_of_a_trained_layer_match_float64_references(trained_lenet):
  workdir, _ = trained_lenet
  W = np.asarray(units.unit_matrix(Run(workdir).trained_variables(), "fc1"))  # 300 x 784, float32
  assert pruning.removal_order(W, "max_fp").tolist() == _fsum_fp_order(W, False)
  assert pruning.removal_order(W, "min_fp").tolist() == _fsum_fp_order(W, True)
  squared = [math.fsum(np.asarray(w, np.float64) ** 2) for w in W]
  by_norm = sorted(range(len(W)), key=lambda i: (squared[i], i))
  assert pruning.removal_order(W, "max_mag").tolist() == by_norm
  assert pruning.removal_order(W, "min_mag").tolist() == sorted(range(len(W)), key=lambda i: (-squared[i], i))


def test_random_order_is_a_seeded_permutation():
  a = pruning.removal_order(W_HAND, "random", key=jax.random.key(3))
  b = pruning.removal_order(W_HAND, "random", key=jax.random.key(3))
  assert sorted(a.tolist()) == list(range(5)) and a.tolist() == b.tolist()
  with pytest.raises(criteria.CriterionError, match="needs a key"):
    pruning.removal_order(W_HAND, "random")


def test_unknown_criterion_lists_valid_ones():
  with pytest.raises(criteria.CriterionError, match="valid criteria: max_mag, min_mag, max_fp, min_fp, random, max_l1"):
    pruning.removal_order(W_HAND, "taylor")


@pytest.mark.parametrize("criterion", criteria.REPORT_CRITERIA)
def test_masks_are_nested(criterion):
  W = jax.random.normal(jax.random.key(0), (20, 6))
  order = pruning.removal_order(W, criterion, key=jax.random.key(1))
  masks = np.asarray(pruning.level_masks(order, jnp.arange(21)))
  assert masks[0].all() and not masks[-1].any()
  for p in range(20):
    assert (masks[p + 1] <= masks[p]).all()  # level p+1 keeps a subset of level p
    assert np.flatnonzero(masks[p] & ~masks[p + 1]).tolist() == [int(order[p])]


def test_unit_matrix_layouts():
  dense = {"fc1": {"kernel": jnp.arange(6.0).reshape(3, 2)}}
  np.testing.assert_array_equal(units.unit_matrix(dense, "fc1"), np.arange(6.0).reshape(3, 2).T)
  kernel = jnp.arange(3 * 3 * 2 * 4.0).reshape(3, 3, 2, 4)
  W = units.unit_matrix({"conv1": {"kernel": kernel}}, "conv1")
  assert W.shape == (4, 18)
  np.testing.assert_array_equal(W[1], np.asarray(kernel)[..., 1].reshape(-1))


# ----------------------------------------------------------------------------- exact removal


CASES = [
  ("lenet", {}, "fc1", (28, 28, 1)),  # dense before dense
  ("conv2", {"width": 0.25}, "conv1", (32, 32, 3)),  # conv before conv
  ("conv2", {"width": 0.25}, "conv2", (32, 32, 3)),  # last conv (then pool) before the dense head
  ("conv4", {"width": 0.25, "batch_norm": True}, "conv3", (32, 32, 3)),  # conv with BatchNorm
  # BN conv before global average pool; VGG19 whole, the longest to compile: the end-to-end tier
  pytest.param("vgg19", {"width": 0.125}, "conv16", (32, 32, 3), marks=pytest.mark.e2e),
]


def _perturbed_variables(model, shape, key):
  """Initial variables with non-zero biases, BN shifts and statistics, so leaks would show."""
  variables = init_variables(model, key, shape)
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [l + 0.1 * jax.random.normal(k, l.shape) if l.ndim == 1 else l for l, k in zip(leaves, keys)]
  variables = jax.tree.unflatten(tree, leaves)
  if "batch_stats" in variables:
    variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])
  return variables


def _plan_forward(net, variables, x, layer=None, keep=None):
  """The report's models written out by hand from their plan, in NumPy-like jnp (NHWC, HWIO, SAME 3x3
  convolutions by lax, BatchNorm's formula with its running statistics): an implementation independent of
  the library's. With `layer` and `keep`, the units of `layer` where `keep` is False are physically
  removed: its kernel's columns, its bias and BatchNorm entries, and the next layer's input rows."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  h = (x.astype(jnp.float32) - jnp.asarray(net.mean)) / jnp.asarray(net.std)
  dropped = None  # the previous layer's kept units, once it was pruned
  for spec in net.module.plan:
    if spec.before == "flatten":
      h = h.reshape(h.shape[0], -1)
    elif spec.before == "gap":
      h = jnp.mean(h, axis=(1, 2))
    kernel, bias = params[spec.name]["kernel"], params[spec.name]["bias"]
    if dropped is not None:  # this layer reads the pruned one: only its kept units' rows
      kernel = kernel[:, :, dropped, :] if kernel.ndim == 4 else kernel[np.tile(dropped, kernel.shape[0] // len(dropped))]
      dropped = None
    pruned = spec.name == layer
    if pruned:
      kernel, bias = kernel[..., keep], bias[keep]
    if spec.kind == "conv":
      h = jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
      if f"{spec.name}_bn" in params:
        bn, st = params[f"{spec.name}_bn"], stats[f"{spec.name}_bn"]
        select = (lambda a: a[keep]) if pruned else (lambda a: a)
        h = (h - select(st["mean"])) / jnp.sqrt(select(st["var"]) + 1e-5) * select(bn["scale"]) + select(bn["bias"])
    else:
      h = h @ kernel + bias
    if not spec.output:
      h = jnp.maximum(h, 0)
    if spec.after == "pool":
      n, hh, ww, c = h.shape
      h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
    if pruned:
      dropped = keep
  return h


@pytest.mark.parametrize("name, options, layer, shape", CASES)
def test_remove_units_equals_a_hand_written_network_without_those_units(name, options, layer, shape):
  model = create_model(name, image_shape=shape, **options)
  variables = _perturbed_variables(model, shape, jax.random.key(0))
  m = variables["params"][layer]["kernel"].shape[-1]
  keep = np.random.default_rng(1).random(m) < 0.6
  x = jax.random.normal(jax.random.key(2), (4, *shape))
  masked = model.apply(pruning.remove_units(model, variables, layer, jnp.asarray(keep)), x)
  np.testing.assert_allclose(_plan_forward(model, variables, x), model.apply(variables, x), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(masked, _plan_forward(model, variables, x, layer, keep), rtol=1e-4, atol=1e-4)
  # zeroing only the incoming weights is not removal: the bias (or BN shift) still flows on
  zeroed = jax.tree.map(lambda a: a, variables)
  zeroed["params"][layer] = {**zeroed["params"][layer], "kernel": zeroed["params"][layer]["kernel"] * keep}
  assert not np.allclose(model.apply(zeroed, x), masked, atol=1e-5)


def test_remove_units_vmaps_over_masks():
  model = create_model("lenet")
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  order = pruning.removal_order(units.unit_matrix(variables, "fc1"), "max_mag")
  keep = pruning.level_masks(order, jnp.array([0, 100, 299]))
  pruned = jax.vmap(lambda k: pruning.remove_units(model, variables, "fc1", k))(keep)
  assert pruned["params"]["fc1"]["kernel"].shape == (3, 784, 300) and pruned["params"]["fc1"]["bias"].shape == (3, 300)
  assert int(jnp.sum(jnp.any(pruned["params"]["fc1"]["kernel"][2] != 0, axis=0))) == 1  # one unit left
  assert int(jnp.sum(jnp.any(pruned["params"]["fc1"]["kernel"][1] != 0, axis=0))) == 200
  np.testing.assert_array_equal(pruned["params"]["fc2"]["kernel"][2], variables["params"]["fc2"]["kernel"])


# ----------------------------------------------------------------------------- the sweep


def _loop_accuracy(model, variables, layer, x, y, order, level):
  keep = pruning.level_masks(order, jnp.array([level]))[0]
  logits = model.apply(pruning.remove_units(model, variables, layer, keep), x)
  return float(jnp.mean(jnp.argmax(logits, -1) == y))


def test_sweep_matches_loop_on_trained_lenet(trained_lenet):
  workdir, _ = trained_lenet
  ds = data.load_bundled_mnist(0)
  model = create_model("lenet", mean=ds.mean, std=ds.std)
  variables = Run(workdir).trained_variables()
  x = ds.test_x
  for layer in ("fc1", "fc2"):
    W = units.unit_matrix(variables, layer)
    orders = {c: pruning.removal_order(W, c) for c in criteria.REPORT_DETERMINISTIC}
    orders["random/0"] = pruning.removal_order(W, "random", key=jax.random.key(0))
    out = pruning.sweep(model, variables, layer, ds.test_x, ds.test_y, orders)
    m = W.shape[0]
    for name, level in itertools.product(orders, [0, 1, m // 3, m // 2, m - 5, m]):
      expected = _loop_accuracy(model, variables, layer, x, ds.test_y, orders[name], level)
      assert out[name]["accuracy"][level] == pytest.approx(expected, abs=1e-6), (layer, name, level)
    by_hand = (ds.test_x.reshape(-1, 784) / 255.0 - ds.mean[0]) / ds.std[0]  # the model standardises itself
    p = variables["params"]
    for name in ("fc1", "fc2"):
      by_hand = np.maximum(by_hand @ p[name]["kernel"] + p[name]["bias"], 0)
    by_hand = by_hand @ p["fc3"]["kernel"] + p["fc3"]["bias"]
    assert out["max_mag"]["accuracy"][0] == pytest.approx(float(np.mean(np.argmax(by_hand, -1) == ds.test_y)))


@pytest.mark.parametrize("layer, nested", [("conv1", False), ("conv1", True), ("conv2", True), ("conv2", False), ("fc1", True)])
def test_sweep_matches_loop_on_conv2(layer, nested):
  ds = data.random_images(seed=0, n_train=16, n_val=8, n_test=300)
  model = create_model("conv2", width=0.125, mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
  variables = _perturbed_variables(model, (32, 32, 3), jax.random.key(0))
  x = ds.test_x
  W = units.unit_matrix(variables, layer)
  orders = {c: pruning.removal_order(W, c) for c in ("max_mag", "min_fp")}
  m = W.shape[0]
  levels = [0, 2, m // 2, m - 1, m]
  out = pruning.sweep(
    model, variables, layer, ds.test_x, ds.test_y, orders, levels, data_chunk=128, mask_chunk=3, nested=nested,
  )
  for name in orders:
    for i, level in enumerate(levels):
      expected = _loop_accuracy(model, variables, layer, x, ds.test_y, orders[name], level)
      assert out[name]["accuracy"][i] == pytest.approx(expected, abs=1e-6), (name, level)


@pytest.mark.parametrize(
  "layer, levels, message",
  [
    ("fc9", None, "unknown layer 'fc9' of lenet; prunable layers: fc1, fc2"),
    ("fc3", None, r"layer 'fc3' of lenet is not prunable: its units are the network's outputs \(the classifier\); "
                  "prunable layers: fc1, fc2"),
    ("fc1", [0, 301], r"levels must lie in 0\.\.300"),
    ("fc1", [5, 3], "strictly increasing"),
  ],
)
def test_sweep_bad_input(layer, levels, message):
  model = create_model("lenet")
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  x, y = np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int32)
  order = {"max_mag": jnp.arange(300)}
  with pytest.raises(pruning.PruningError, match=message):
    pruning.sweep(model, variables, layer, x, y, order, levels)


def test_output_layer_and_non_finite_weights_are_errors():
  model = create_model("lenet")
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  with pytest.raises(pruning.PruningError, match="the classifier"):
    pruning.remove_units(model, variables, "fc3", jnp.ones(10, bool))
  with pytest.raises(pruning.PruningError, match="layer 'fc1' has non-finite"):
    pruning.check_finite(jnp.array([[1.0, jnp.nan]]), "fc1")


# ----------------------------------------------------------------------------- comparing criteria


def _accuracy(model, variables, x, y):
  return float(np.mean(np.argmax(np.asarray(model.apply(variables, x)), -1) == y))


def test_compare_criteria_equals_independent_loop():
  ds = data.random_images(seed=3, shape=(8, 8, 1), n_train=8, n_val=8, n_test=120)
  model = create_model("lenet", width=0.05, mean=ds.mean, std=ds.std, image_shape=ds.image_shape)  # fc1: 15 units
  variables = _perturbed_variables(model, (8, 8, 1), jax.random.key(4))
  out = prune_sweep.compare_criteria(model, variables, "fc1", ds.test_x, ds.test_y, random_seeds=3, seed=5)
  W = units.unit_matrix(variables, "fc1")
  assert out["units"] == 15 and out["levels"] == list(range(16))
  assert out["base_accuracy"] == pytest.approx(_accuracy(model, variables, ds.test_x, ds.test_y))
  random_orders = [out["orders"][f"random/{i}"] for i in range(3)]
  assert all(sorted(o) == list(range(15)) for o in random_orders) and random_orders[0] != random_orders[1]
  for criterion in criteria.REPORT_DETERMINISTIC:
    assert out["orders"][criterion] == pruning.removal_order(W, criterion).tolist()
    for level in range(16):
      expected = _loop_accuracy(model, variables, "fc1", ds.test_x, ds.test_y, out["orders"][criterion], level)
      assert out["criteria"][criterion]["accuracy"][level] == pytest.approx(expected, abs=1e-6), (criterion, level)
  loop = np.array([[_loop_accuracy(model, variables, "fc1", ds.test_x, ds.test_y, np.array(o), lv) for lv in range(16)]
                   for o in random_orders])
  np.testing.assert_allclose(out["random"]["accuracy_mean"], loop.mean(0), atol=1e-6)
  np.testing.assert_allclose(out["random"]["accuracy_std"], loop.std(0), atol=1e-6)


def test_summary_rows_pick_the_nearest_level_by_hand():
  result = {
    "units": 10, "levels": [0, 2, 4, 6, 8, 10],
    "criteria": {"max_mag": {"accuracy": [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]}},
    "random": {"accuracy_mean": [0.9, 0.85, 0.75, 0.65, 0.55, 0.1]},
  }
  # fractions 0.25, 0.5, 0.75, 0.9 of 10 units: 2.5 -> level 2, 5 -> 4 (tie with 6: the first), 7.5 -> 8, 9 -> 8
  assert prune_sweep.summary_rows(result) == [("max_mag", [0.8, 0.7, 0.5, 0.5]), ("random (mean)", [0.85, 0.75, 0.55, 0.55])]


def test_every_criterion_is_explained_and_the_figure_labels_say_so(tmp_path):
  from redundancy_jax.plots import pruning as plots

  assert criteria.REPORT_CRITERIA == ("max_mag", "min_mag", "max_fp", "min_fp", "random")
  assert "largest-norm" in criteria.help_text("max_mag") and "smallest" in criteria.help_text("max_mag")
  levels = [0, 1, 2]
  layer = {
    "units": 2, "levels": levels, "base_accuracy": 0.948,
    "criteria": {c: {"accuracy": [0.948, 0.5, 0.1], "loss": [0.2, 1.0, 2.3]} for c in criteria.REPORT_DETERMINISTIC},
    "random": {"seeds": 5, "accuracy_mean": [0.948, 0.4, 0.1], "accuracy_std": [0.0, 0.1, 0.0]},
  }
  fig, ax = plots.plt.subplots()
  plots.accuracy_curves(ax, layer, "lenet fc1 (2 units)")
  labels = ax.get_legend_handles_labels()[1]
  plots.plt.close(fig)
  for c in criteria.REPORT_CRITERIA:
    assert any(label.startswith(c) and criteria.help_text(c).split()[0] in label for label in labels), (c, labels)
  assert "unpruned: 94.80%" in labels
  results = {"config": {"model": "lenet", "split": "test", "examples": 1000}, "layers": {"fc1": layer},
             "dataset": {"name": "mnist", "source": "bundled MNIST test set (8,000/1,000/1,000)"}}
  png, pdf = plots.save_figure(results, str(tmp_path / "figure2"))
  assert os.path.getsize(png) > 0 and os.path.exists(pdf)


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1"])
def test_sweep_on_a_trained_batchnorm_model_matches_loop(tmp_path_factory, layer):


  workdir = str(tmp_path_factory.getbasetemp() / "conv2_bn")
  ds = data.random_images(seed=1, shape=(12, 12, 3), n_train=512, n_val=64, n_test=200)
  cfg = config.TrainConfig(model="conv2", dataset="random_images", width=0.125, batch_norm=True, steps=48,
                          batch_size=32, eval_every=16)
  train.train(cfg, workdir, dataset=ds, log=lambda s: None)  # trains once, reused by the other layers
  model = create_model("conv2", width=0.125, batch_norm=True, mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
  variables = Run(workdir).trained_variables()
  assert np.any(np.asarray(variables["batch_stats"]["conv1_bn"]["mean"]) != 0)  # trained statistics
  W = units.unit_matrix(variables, layer)
  orders = {c: pruning.removal_order(W, c) for c in ("max_mag", "min_fp")}
  m = W.shape[0]
  levels = [0, 1, m // 2, m - 1, m]
  out = pruning.sweep(model, variables, layer, ds.test_x, ds.test_y, orders, levels, mask_chunk=4)
  for name in orders:
    for i, level in enumerate(levels):
      expected = _loop_accuracy(model, variables, layer, ds.test_x, ds.test_y, orders[name], level)
      assert out[name]["accuracy"][i] == pytest.approx(expected, abs=1e-6), (name, level)


def test_summary_header_gives_the_fraction_actually_swept():
  result = {
    "config": {"model": "m", "split": "test", "examples": 10, "criteria": ["max_mag"]},
    "dataset": {"name": "mnist", "source": "bundled"}, "base_accuracy": 0.9,
    "layers": {"fc1": {"units": 10, "levels": [0, 2, 4, 6, 8, 10],
                       "criteria": {"max_mag": {"accuracy": [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]}}}},
  }
  # the nearest levels to 2.5, 5, 7.5 and 9 units are 2, 4, 8 and 8: 20%, 40%, 80%, 80% of 10 units
  header = next(line for line in prune_sweep.summary(result).splitlines() if "units removed" in line)
  assert header.split()[2:] == ["20%", "40%", "80%", "80%"]

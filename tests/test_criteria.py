"""The criteria registry and the field's data-aware criteria: each statistic against a plain NumPy loop on a
tiny network (forward and backward by hand), orders as worked out by hand, BatchNorm scale only where a
BatchNorm follows, and a toy criterion registered here that reaches the sweep's outputs, the legend and the
page without touching the library."""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ROOT
from redundancy_jax.analyses import criteria, prune_sweep
from redundancy_jax.models import from_module, topology


class TinyMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(3, name="out")(nn.relu(nn.Dense(5, name="hidden")(x)))


class TinyBN(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), name="conv")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
    x = nn.Conv(3, (3, 3), name="conv_plain")(x)
    return nn.Dense(3, name="out")(jnp.mean(nn.relu(x), axis=(1, 2)))


def _mlp(seed=0):
  net = from_module("tiny_mlp", TinyMLP(), image_shape=(2, 3, 1))
  variables = net.init(jax.random.key(seed), (2, 3, 1))
  x = np.asarray(jax.random.normal(jax.random.key(seed + 1), (37, 2, 3, 1)), np.float32)
  y = np.asarray(jax.random.randint(jax.random.key(seed + 2), (37,), 0, 3), np.int32)
  return net, variables, x, y


def _numpy_statistics(variables, x, y):
  """Taylor, mean activation and APoZ of the hidden layer by a forward and backward pass per image, by hand."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  W1, b1, W2, b2 = p["hidden"]["kernel"], p["hidden"]["bias"], p["out"]["kernel"], p["out"]["bias"]
  taylor, mean, zeros = np.zeros(5), np.zeros(5), np.zeros(5)
  for xi, yi in zip(np.asarray(x, np.float64).reshape(len(x), -1), y):
    z = xi @ W1 + b1  # the unit's output where removal zeroes it (no BatchNorm)
    a = np.maximum(z, 0)
    logits = a @ W2 + b2
    p_ = np.exp(logits - logits.max())
    p_ /= p_.sum()
    dlogits = p_ - np.eye(3)[yi]  # d cross-entropy / d logits
    da = W2 @ dlogits
    ds = da * (z > 0) * z  # d L / d s_j with the output s_j z_j entering the ReLU, at s = 1
    taylor += np.abs(ds)
    mean += a
    zeros += a <= 0
  n = len(y)
  return {"taylor": taylor / n, "mean_activation": mean / n, "apoz": zeros / n}


@pytest.mark.parametrize("chunk", [8, 128])
def test_data_statistics_equal_a_numpy_loop_by_hand(chunk):
  net, variables, x, y = _mlp()
  got = criteria.data_statistics(net, variables, "hidden", x, y, chunk=chunk)
  want = _numpy_statistics(variables, x, y)
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=1e-7, err_msg=key)
  assert 0 < want["apoz"].mean() < 1  # some units are off on some images: the statistic is not trivial


def test_taylor_on_a_convolution_with_batchnorm_equals_finite_differences():
  """Taylor on a Conv + BatchNorm: the derivative of each image's loss with respect to a scale of the unit's
  output after the BatchNorm, by central differences in float64 through flax's own interception."""
  net = from_module("tiny_bn", TinyBN(), image_shape=(6, 6, 1))
  variables = net.init(jax.random.key(0), (6, 6, 1))
  stats = variables["batch_stats"]["bn"]
  variables = {**variables, "batch_stats": {"bn": {"mean": stats["mean"] + 0.3, "var": stats["var"] * 2.0}}}
  x = np.asarray(jax.random.normal(jax.random.key(1), (9, 6, 6, 1)), np.float32)
  y = np.asarray(jax.random.randint(jax.random.key(2), (9,), 0, 3), np.int32)
  got = criteria.data_statistics(net, variables, "conv", x, y, chunk=4)
  with jax.enable_x64(True):
    v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)

    def loss(scale, xi, yi):
      def scaled(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        return out * scale if context.module.name == "bn" and context.method_name == "__call__" else out
      with nn.intercept_methods(scaled):
        logits = TinyBN().apply(v64, jnp.asarray(xi[None], jnp.float64))
      return -jax.nn.log_softmax(logits)[0, yi]

    eps = 1e-6
    taylor = np.zeros(4)
    for xi, yi in zip(x, y):
      for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        taylor[j] += abs(float(loss(1 + e, xi, yi) - loss(1 - e, xi, yi)) / (2 * eps)) / 36  # 6 x 6 positions
  np.testing.assert_allclose(got["taylor"], taylor / len(y), rtol=1e-4, atol=1e-8)
  # the activations are the BatchNorm's output after the ReLU, as topology.activations gives them
  act = np.asarray(topology.activations(net, variables, x, "conv")).reshape(-1, 4)
  np.testing.assert_allclose(got["mean_activation"], act.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got["apoz"], (act <= 0).mean(0), atol=1e-7)


def test_orders_by_hand():
  W = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, -2.0], [0.5, 0.0]])  # norms 3, 1.41, 2, 0.5; L1 3, 2, 2, 0.5
  ev = type("E", (), {"W": W})()
  assert criteria.get("max_mag").order(ev).tolist() == [3, 1, 2, 0]
  assert criteria.get("min_mag").order(ev).tolist() == [0, 2, 1, 3]
  assert criteria.get("max_l1").order(ev).tolist() == [3, 1, 2, 0]  # the tie 2 = 2: the lower index first
  assert criteria.get("min_l1").order(ev).tolist() == [0, 1, 2, 3]
  scores = type("E", (), {"statistics": {"taylor": np.array([0.2, 0.1, 0.4, 0.3]),
                                         "apoz": np.array([0.5, 0.9, 0.1, 0.5]),
                                         "mean_activation": np.array([1.0, 0.0, 2.0, 3.0])}})()
  assert criteria.get("max_taylor").order(scores).tolist() == [1, 0, 3, 2]
  assert criteria.get("min_apoz").order(scores).tolist() == [1, 0, 3, 2]  # keeps the fewest zeros: most zeros go first
  assert criteria.get("max_act").order(scores).tolist() == [1, 0, 2, 3]


def test_frame_potential_orders_equal_a_plain_greedy_loop():
  W = np.asarray(jax.random.normal(jax.random.key(3), (12, 7)), np.float64)
  U = W / np.linalg.norm(W, axis=1, keepdims=True)
  for name, remove_largest in (("max_fp", False), ("min_fp", True)):
    alive, order = list(range(12)), []
    while alive:
      contrib = {i: sum((U[i] @ U[j]) ** 2 for j in alive) for i in alive}
      best = (max if remove_largest else min)(contrib.values())
      pick = min(i for i in alive if abs(contrib[i] - best) <= 1e-12)  # ties (within rounding): the lower index
      order.append(pick)
      alive.remove(pick)
    assert criteria.get(name).order(type("E", (), {"W": W})()).tolist() == order, name


def test_batchnorm_scale_only_where_a_batchnorm_follows():
  net = from_module("tiny_bn", TinyBN(), image_shape=(6, 6, 1))
  variables = net.init(jax.random.key(0), (6, 6, 1))
  scale = np.array([0.5, -2.0, 1.0, 0.1])
  variables = {**variables, "params": {**variables["params"], "bn": {**variables["params"]["bn"], "scale": scale}}}
  ev = criteria.Evidence(net, variables, "conv")
  assert criteria.get("max_bn").order(ev).tolist() == [3, 0, 2, 1]  # |gamma| 0.5, 2, 1, 0.1
  offered, left_out = criteria.offered(criteria.names(), topology.check(net, "conv_plain"))
  assert "max_bn" not in offered and left_out == {"max_bn": "no BatchNorm follows conv_plain",
                                                   "min_bn": "no BatchNorm follows conv_plain"}
  with pytest.raises(criteria.CriterionError, match="not offered on conv_plain: no BatchNorm follows"):
    criteria.check(["max_mag", "max_bn"], topology.check(net, "conv_plain"))
  with pytest.raises(criteria.CriterionError, match="valid criteria: max_mag, min_mag, max_fp"):
    criteria.get("max_magnitude")


def test_every_criterion_is_in_the_definitions_table():
  text = open(os.path.join(ROOT, "docs", "DEFINITIONS.md"), encoding="utf-8").read()
  for c in criteria.REGISTRY.values():
    row = f"| `{c.name}` | {c.help.replace('|', chr(92) + '|')} | {criteria.NEEDS[c.needs]} | {c.source} |"
    assert row in text, row


def _bias_criterion():
  return criteria.Criterion("max_toybias", "keeps the units with the largest bias (a test's toy)", criteria.WEIGHTS,
                            criteria.by_score(lambda ev: ev.bias), style=("tab:cyan", ":"))


def test_a_criterion_registered_here_reaches_the_sweep_the_legend_and_the_page(tmp_path):
  from redundancy_jax.analyses import network as network_page
  from redundancy_jax.plots import pruning as plots
  from redundancy_jax.reproduction import page

  net, variables, x, y = _mlp()
  bias = np.array([0.3, -0.1, 0.2, 0.0, 0.5])
  variables = {**variables, "params": {**variables["params"],
                                       "hidden": {**variables["params"]["hidden"], "bias": bias}}}
  criteria.register(_bias_criterion())
  try:
    r = prune_sweep.compare_criteria(net, variables, "hidden", x, y, criteria=("max_mag", "max_toybias", "random"),
                                     random_seeds=2)
    assert r["orders"]["max_toybias"] == [1, 3, 2, 0, 4]  # the smallest bias first
    assert set(r["criteria"]) == {"max_mag", "max_toybias"}
    results = {"config": {"model": "tiny_mlp"}, "layers": {"hidden": r}}
    assert any(label.startswith("max_toybias: keeps the units with the largest bias") for label in
               plots.legend_entries(results))
    paths = plots.save_figure(results, str(tmp_path / "figure2"))
    assert all(os.path.getsize(p) > 0 for p in paths)
    html = page.render([network_page.criteria_block(results)], "report.html.j2")
    row = re.search(r"<tr><td>max_toybias</td>(.*?)</tr>", html).group(1)
    assert "keeps the units with the largest bias" in row and "the layer&#39;s weights" in row
  finally:
    criteria.unregister("max_toybias")
  assert "max_toybias" not in criteria.names()


def test_every_criterion_is_in_the_readme_table():
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  for c in criteria.REGISTRY.values():
    row = f"| `{c.name}` | {c.help.replace('|', chr(92) + '|')} | {criteria.NEEDS[c.needs]} |"
    assert row in text, row


def test_registering_again_replaces_and_a_clash_names_the_fix():
  first = criteria.register(_bias_criterion())
  try:
    again = criteria.register(_bias_criterion())  # a new function object: a cell run twice
    assert criteria.get("max_toybias") is again and again.order is not first.order
    clash = criteria.Criterion("max_toybias", "something else", criteria.WEIGHTS, criteria.by_score(lambda ev: ev.W[:, 0]))
    with pytest.raises(criteria.CriterionError, match=r"already registered .*criteria.unregister\('max_toybias'\)"):
      criteria.register(clash)
    with pytest.raises(criteria.CriterionError, match="only 'random' is averaged over seeds"):
      criteria.register(criteria.Criterion("max_noisy", "noisy", criteria.WEIGHTS, first.order, deterministic=False))
  finally:
    criteria.unregister("max_toybias")

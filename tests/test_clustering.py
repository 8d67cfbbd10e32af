"""Filter clustering and XORD: labels by enumeration, the network and the angle statistic by hand,
padding, compression, and the script end to end."""

import json

import jax
import numpy as np
import pytest
import scipy.stats

from experiments import clustering as script
from redundancy_jax.core.config import override, preset
from redundancy_jax.related import clustering


def test_xord_labels_and_balanced_weights_by_enumeration():
  x, y, w = clustering.xord_enumeration(2)
  assert x.shape == (16, 4) and np.sum(y > 0) == 12 and np.sum(y < 0) == 4  # negatives: both pairs unequal
  for point, label in zip(x, y):
    equal = point[0] == point[1] or point[2] == point[3]
    assert label == (1 if equal else -1)
  assert w.sum() == pytest.approx(1.0) and w[y > 0].sum() == pytest.approx(0.5)
  assert clustering.xord_label(np.array([[1, -1, -1, -1]]))[0] == 1


def test_xord_net_by_hand():
  """One filter per sign: w+ = (1, 1), w- = (-1, -1). x = (1, 1, -1, 1): pairs (1, 1) and (-1, 1);
  w+ gives relu(2), relu(0) -> max 2; w- gives relu(-2), relu(0) -> max 0; output 2 - 0 = 2."""
  W = np.array([[1.0, 1.0], [-1.0, -1.0]], np.float32)
  out = clustering.xord_net(W, np.array([[1.0, 1.0, -1.0, 1.0]], np.float32), np.ones(2, np.float32))
  assert float(out[0]) == 2.0
  padded = np.array([[1.0, 1.0], [5.0, 5.0], [-1.0, -1.0], [5.0, 5.0]], np.float32)  # k = 1 padded to K = 2
  out = clustering.xord_net(padded, np.array([[1.0, 1.0, -1.0, 1.0]], np.float32), clustering.channel_mask(1, 2))
  assert float(out[0]) == 2.0


def test_angles_to_nearest_centre_by_hand():
  filters = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
  angles, labels, _ = clustering.nearest_centre_angles(filters, 2, seed=0)
  np.testing.assert_allclose(angles, 0.0, atol=1e-6)
  assert labels[0] == labels[1] != labels[2] == labels[3]
  angles, _, centres = clustering.nearest_centre_angles(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), 1)
  np.testing.assert_allclose(angles[:2], 22.5, atol=1e-6)  # one centre halfway between 0 and 45 degrees
  assert np.isnan(angles[2])  # a zero filter has no direction


def test_compress_scales_the_centre_to_each_norm():
  out = clustering.compress(np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
  np.testing.assert_allclose(out, [[5.0, 0.0], [0.0, 2.0]])


def test_padded_filters_stay_at_initialisation_and_the_net_fits():
  x, y, _ = clustering.xord_enumeration(2)
  out = clustering.train_xord(jax.random.key(0), [1, 3], x, y, seeds=2, steps=300, lr=0.1, batch=8)
  assert out["W"].shape == (2, 2, 6, 2)
  inactive = out["mask"][0] == 0
  np.testing.assert_array_equal(out["W"][0, :, inactive], out["W0"][0, :, inactive])
  assert np.any(out["W"][0, :, ~inactive] != out["W0"][0, :, ~inactive])
  assert clustering.accuracy(out["W"][1, 0], out["mask"][1], x, y) == 1.0  # 3 filters per sign fit all 16 points


def _row(k, test, init, trained):
  return {"k": k, "test_mean": test, "test_std": 0.01, "angles_init": {"median": init},
          "angles_trained": {"median": trained}, "init_median_by_seed": [init - 1, init + 1]}


@pytest.mark.parametrize(
  "test, verdict",
  [
    ((0.8, 0.9, 1.0), "holds"),
    ((0.9, 0.8, 1.0), "does not hold"),  # ranks 2, 1, 3 against 1, 2, 3: rho = 1 - 6 (1 + 1 + 0) / 24 = 0.5 < 0.6
    ((0.9, 1.0, 1.0), "holds"),  # ranks 1, 2.5, 2.5: rho = 1.5 / sqrt(2 x 1.5) = 0.87
    ((1.0, 0.9, 0.8), "does not hold"),
    pytest.param((1.0, 1.0, 1.0), "does not hold",  # no rise at all (the correlation is undefined)
                 marks=pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")),
  ],
)
def test_generalisation_headline_by_hand(test, verdict):
  rows = [_row(k, t, 20.0, 5.0) for k, t in zip((2, 4, 8), test)]
  assert clustering.headlines({"rows": rows}, _row(0, 0, 40.0, 30.0))[0].verdict == verdict


@pytest.mark.parametrize(
  "xord, conv2, verdict",
  [((20.0, 5.0), (40.0, 30.0), "holds"), ((20.0, 5.0), (40.0, 41.0), "does not hold"),
   ((20.0, 20.0), (40.0, 30.0), "does not hold")],
)
def test_clustering_headline_by_hand(xord, conv2, verdict):
  """(initial, trained) median angles of the widest XORD network and of Conv-2: both must fall."""
  rows = [_row(k, t, *xord) for k, t in ((2, 0.8), (4, 0.9), (8, 1.0))]
  assert clustering.headlines({"rows": rows}, _row(0, 0, *conv2))[1].verdict == verdict


def _balanced_accuracies(pairs: int) -> set:
  """Every accuracy the balanced XORD distribution allows: a of the positives and b of the 2^d negatives
  right, each class weighing one half (d = 4: 240 positives and 16 negatives)."""
  negatives = 2**pairs
  positives = 4**pairs - negatives
  return {round(0.5 * a / positives + 0.5 * b / negatives, 9)
          for a in range(positives + 1) for b in range(negatives + 1)}


@pytest.mark.e2e
def test_script_quick_and_bad_input(tmp_path):
  cfg = override(preset(clustering.ClusteringConfig()), ks="2,4,8", steps=300, conv2_steps=20,
                 conv2_workdir=str(tmp_path / "conv2"), workdir=str(tmp_path))
  script.main(cfg)
  results = json.loads((tmp_path / "results.json").read_text())
  rows, centres = results["xord"]["rows"], results["config"]["centres"]
  assert [r["k"] for r in rows] == [2, 4, 8] and len(results["headlines"]) == 2 and centres == [1, 2, 4, 8, 16, 32]
  allowed = _balanced_accuracies(4)
  for r in rows:
    assert all(round(a, 9) in allowed for a in r["test_accuracy"]), r["test_accuracy"]
    # as many centres as the 2k filters: each filter is its own centre, the network unchanged (seed 0)
    for c, a in zip(centres, r["compressed_accuracy"]):
      if c >= 2 * r["k"]:
        assert a == pytest.approx(r["test_accuracy"][0], abs=1e-12), (c, a)
    # one centre: every filter points the same way, so the output is sum(+ norms) - sum(- norms) times one
    # max of ReLUs >= 0: one class for every point (or 0, wrong), at most half of the balanced weight
    assert r["compressed_accuracy"][0] <= 0.5 + 1e-12
  conv2 = results["conv2"]
  assert conv2["filters"] == 16  # Conv-2's 64 first-layer filters at width 0.25
  for c, a in zip(centres, conv2["compressed_accuracy"]):
    if c >= 16:
      assert abs(a - conv2["accuracy"]) <= 1 / conv2["dataset"]["sizes"]["test"], (c, a)
  assert sum(conv2["angles_trained"]["histogram"]) == conv2["filters"]
  # the headlines' rules by hand: Spearman as the Pearson correlation of (average) ranks
  test = [np.mean(r["test_accuracy"]) for r in rows]
  rho = np.corrcoef(scipy.stats.rankdata([2, 4, 8]), scipy.stats.rankdata(test))[0, 1]
  rises = rho >= 0.6 and test[-1] > test[0]
  falls = all(x["angles_trained"]["median"] < x["angles_init"]["median"] for x in (rows[-1], conv2))
  assert [h["verdict"] for h in results["headlines"]] == ["holds" if ok else "does not hold" for ok in (rises, falls)]
  assert (tmp_path / "figure.png").stat().st_size > 0
  with pytest.raises(ValueError, match="must be positive"):
    script.main(override(cfg, ks="0,4", workdir=str(tmp_path / "bad")))
  assert not (tmp_path / "bad").exists()

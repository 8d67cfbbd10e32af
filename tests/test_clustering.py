"""Filter clustering and XORD: labels by enumeration, the network and the angle statistic by hand,
padding, compression, and the script end to end."""

import json

import jax
import numpy as np
import pytest

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


def test_script_quick_and_bad_input(tmp_path):
  cfg = override(preset(clustering.ClusteringConfig()), ks="2,4,8", steps=300, conv2_steps=20,
                 conv2_workdir=str(tmp_path / "conv2"), workdir=str(tmp_path))
  script.main(cfg)
  results = json.loads((tmp_path / "results.json").read_text())
  rows = results["xord"]["rows"]
  assert [r["k"] for r in rows] == [2, 4, 8] and len(results["headlines"]) == 2
  assert rows[0]["test_mean"] == pytest.approx(np.mean(rows[0]["test_accuracy"]))
  assert len(results["conv2"]["compressed_accuracy"]) == len(results["config"]["centres"])
  assert sum(results["conv2"]["angles_trained"]["histogram"]) == results["conv2"]["filters"]
  assert (tmp_path / "figure.png").stat().st_size > 0
  with pytest.raises(ValueError, match="must be positive"):
    script.main(override(cfg, ks="0,4", workdir=str(tmp_path / "bad")))
  assert not (tmp_path / "bad").exists()

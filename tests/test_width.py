"""The width study: the one-hidden-layer model, stopping at a training-loss target, the removable
fraction by hand, and the script end to end on the bundled MNIST."""

import glob
import json
import os

import numpy as np
import pytest

from experiments import width as script
from redundancy_jax.analyses.prune_sweep import removable_fraction
from redundancy_jax.core import config, data as data_lib, train
from redundancy_jax.core.config import override, preset
from redundancy_jax.models import create_model, init_variables
from redundancy_jax.related import width
from redundancy_jax.related.width import WidthConfig


def test_mlp_width_is_the_unit_count():
  import jax

  model = create_model("mlp", width=37)
  params = init_variables(model, jax.random.key(0), (28, 28, 1))["params"]
  assert params["fc1"]["kernel"].shape == (784, 37) and params["fc2"]["kernel"].shape == (37, 10)


def test_removable_fraction_by_hand():
  levels = np.array([0, 2, 4, 6, 8])
  # base 0.90, loss 0.01: levels 0..4 stay >= 0.89, level 6 drops below
  assert removable_fraction(levels, [0.90, 0.895, 0.89, 0.85, 0.1], 0.90, 0.01) == 0.5
  assert removable_fraction(levels, [0.90, 0.88, 0.895, 0.89, 0.9], 0.90, 0.01) == 0.0  # a prefix only
  assert removable_fraction(levels, [0.90] * 5, 0.90, 0.01) == 1.0


def test_training_stops_at_the_loss_target(tmp_path):
  """A target every first epoch meets stops after one epoch (125 steps of 64 on 8,000 images), well
  before the step cap; the kept snapshot is that epoch's."""
  cfg = config.TrainConfig(model="mlp", width=16.0, steps=5000, target_train_loss=5.0, num_seeds=2)
  results = train.train(cfg, str(tmp_path), log=lambda s: None)
  assert results["steps_run"] == 125 and results["epochs"] == 1
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 1 and max(lines[0]["train_loss"]) <= 5.0
  assert (tmp_path / "snapshots" / "epoch_00001.npz").exists()
  unreachable = config.TrainConfig(model="mlp", width=16.0, steps=250, target_train_loss=1e-9)
  assert train.train(unreachable, str(tmp_path / "cap"), log=lambda s: None)["steps_run"] == 250


def _rows(distance, error, widths=(8, 16, 64)):
  return [{"width": h, "distance_mean_mean": d, "distance_mean_std": 0.1, "test_error_mean": e}
          for h, d, e in zip(widths, distance, error)]


@pytest.mark.parametrize(
  "widths, distance, error, rho_d, verdict",
  [
    ((8, 16, 64), (3.0, 2.0, 1.0), (0.3, 0.2, 0.1), -1.0, "holds"),
    ((8, 16, 64), (1.0, 2.0, 3.0), (0.3, 0.2, 0.1), 1.0, "does not hold"),  # the distance rises
    # ranks of the distance 3, 1, 2 against 1, 2, 3: rho = 1 - 6 (4 + 1 + 1) / (3 * 8) = -0.5 > -0.6, though
    # the widest is below the narrowest
    ((8, 16, 64), (3.0, 1.0, 2.0), (0.3, 0.2, 0.1), -0.5, "does not hold"),
    # ranks 4, 2, 3, 1: rho = 1 - 6 (9 + 0 + 0 + 9) / (4 * 15) = -0.8 <= -0.6
    ((8, 16, 32, 64), (4.0, 2.0, 3.0, 1.0), (0.4, 0.3, 0.2, 0.1), -0.8, "holds"),
    ((8, 16, 32, 64), (4.0, 2.0, 3.0, 1.0), (0.1, 0.3, 0.2, 0.4), -0.8, "does not hold"),  # the error rises
  ],
)
def test_headline_by_hand(widths, distance, error, rho_d, verdict):
  got = width.headline(_rows(distance, error, widths))
  assert got.verdict == verdict and got.numbers["spearman_distance"] == pytest.approx(rho_d)


def test_headline_needs_three_widths():
  assert width.headline(_rows((2.0, 1.0), (0.2, 0.1))).verdict == "not testable"


def _spearman(a, b) -> float:
  """Pearson correlation of the ranks (no ties)."""
  rank = lambda v: np.argsort(np.argsort(v)).astype(float)
  return float(np.corrcoef(rank(a), rank(b))[0, 1])


def _by_hand(workdir, ds) -> list[dict]:
  """Per seed, from the stored snapshots in NumPy float64: the distances of fc1's units (kernel columns)
  from their initialisation, and the test error of the one-hidden-layer network at its last epoch with
  the number of images whose two largest logits are too close for float32 to order them surely."""
  snapshots = sorted(glob.glob(os.path.join(workdir, "snapshots", "epoch_*.npz")))
  assert snapshots[0].endswith("epoch_00000.npz")
  first, last = (dict(np.load(p)) for p in (snapshots[0], snapshots[-1]))  # {"fc1/kernel": (seeds, 784, h), ...}
  x = (ds.test_x.astype(np.float64) / 255 - np.asarray(ds.mean)) / np.asarray(ds.std)
  x = x.reshape(len(x), -1)
  seeds = []
  for r in range(len(last["fc1/kernel"])):
    p = {k: np.asarray(a[r], np.float64) for k, a in last.items()}
    U_U0 = p["fc1/kernel"] - first["fc1/kernel"][r]  # (784, h): a column per unit
    hidden = np.maximum(x @ p["fc1/kernel"] + p["fc1/bias"], 0)
    logits = hidden @ p["fc2/kernel"] + p["fc2/bias"]
    top2 = np.sort(logits, 1)[:, -2:]
    seeds.append({"distance_mean": np.sqrt((U_U0**2).sum(0)).mean(), "frobenius": np.sqrt((U_U0**2).sum()),
                  "wrong": int(np.sum(logits.argmax(1) != ds.test_y)),
                  "close": int(np.sum(top2[:, 1] - top2[:, 0] < 1e-4 * np.abs(top2).max(1)))})
  return seeds


@pytest.mark.e2e
def test_script_quick_and_bad_input(tmp_path):
  cfg = override(preset(WidthConfig()), widths="8,16,64", max_steps=400, workdir=str(tmp_path))
  script.main(cfg)
  results = json.loads((tmp_path / "results.json").read_text())
  rows = results["rows"]
  assert [r["width"] for r in rows] == [8, 16, 64]
  ds = data_lib.from_config(cfg.training(8).resolve())
  n = len(ds.test_y)
  for r in rows:
    hand = _by_hand(str(tmp_path / f"h{r['width']}"), ds)
    assert len(r["seeds"]) == len(hand) == 2
    for got, want in zip(r["seeds"], hand):
      assert got["distance_mean"] == pytest.approx(want["distance_mean"], rel=1e-5)
      assert got["frobenius"] == pytest.approx(want["frobenius"], rel=1e-5)
      assert abs(round(got["test_error"] * n) - want["wrong"]) <= want["close"], (got["test_error"], want)
      assert 0 <= got["removable_max_mag"] <= 1 and 1 <= got["elbow"] < r["width"]
    wrong, close = (np.mean([s[k] for s in hand]) for k in ("wrong", "close"))
    assert abs(r["test_error_mean"] * n - wrong) <= close + 1e-9
    assert r["steps_run"] == 400 or r["steps_run"] % 125 == 0  # the cap, or whole epochs (8,000 images, batch 64)
  # the headline's rule applied by hand to the rows
  widths, distance, error = ([r[k] for r in rows] for k in ("width", "distance_mean_mean", "test_error_mean"))
  rho_d, rho_e = _spearman(widths, distance), _spearman(widths, error)
  holds = rho_d <= -0.6 and rho_e <= -0.6 and distance[-1] < distance[0] and error[-1] < error[0]
  headline = results["headlines"][0]
  assert headline["verdict"] == ("holds" if holds else "does not hold"), headline
  assert headline["numbers"]["spearman_distance"] == pytest.approx(rho_d)
  assert (tmp_path / "figure.png").stat().st_size > 0
  with pytest.raises(ValueError, match="valid: mnist, fashion_mnist"):
    script.main(override(cfg, dataset="xord", workdir=str(tmp_path / "bad")))
  assert not (tmp_path / "bad").exists()

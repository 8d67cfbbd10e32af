"""The width study: the one-hidden-layer model, stopping at a training-loss target, the removable
fraction by hand, and the script end to end on the bundled MNIST."""

import json

import numpy as np
import pytest

from experiments import width as script
from redundancy_jax.analyses.prune_sweep import removable_fraction
from redundancy_jax.core import config, train
from redundancy_jax.core.config import override, preset
from redundancy_jax.models import create_model, init_variables
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


def test_script_quick_and_bad_input(tmp_path):
  cfg = override(preset(WidthConfig()), widths="8,16,64", max_steps=400, workdir=str(tmp_path))
  script.main(cfg)
  results = json.loads((tmp_path / "results.json").read_text())
  rows = results["rows"]
  assert [r["width"] for r in rows] == [8, 16, 64] and results["headlines"][0]["verdict"]
  for r in rows:
    assert 0 <= r["removable_max_mag_mean"] <= 1 and 1 <= r["elbow_mean"] < r["width"]
    assert r["test_error_mean"] == pytest.approx(np.mean([s["test_error"] for s in r["seeds"]]))
    assert r["steps_run"] <= 400
  assert (tmp_path / "figure.png").stat().st_size > 0
  with pytest.raises(ValueError, match="valid: mnist, fashion_mnist"):
    script.main(override(cfg, dataset="xord", workdir=str(tmp_path / "bad")))
  assert not (tmp_path / "bad").exists()

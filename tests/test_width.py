"""The width study: the one-hidden-layer model, stopping at a training-loss target, the removable
fraction by hand, and the script end to end on the bundled MNIST."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from redundancy_jax import train
from redundancy_jax.pruning import removable_fraction
from redundancy_jax.models import create_model, init_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  cfg = train.TrainConfig(model="mlp", width=16.0, steps=5000, target_train_loss=5.0, num_seeds=2)
  results = train.train(cfg, str(tmp_path), log=lambda s: None)
  assert results["steps_run"] == 125 and results["epochs"] == 1
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 1 and max(lines[0]["train_loss"]) <= 5.0
  assert (tmp_path / "snapshots" / "epoch_00001.npz").exists()
  unreachable = train.TrainConfig(model="mlp", width=16.0, steps=250, target_train_loss=1e-9)
  assert train.train(unreachable, str(tmp_path / "cap"), log=lambda s: None)["steps_run"] == 250


def test_script_quick_and_bad_input(tmp_path):
  cmd = [sys.executable, "-m", "experiments.width", "--quick", "--widths=8,16,64", "--max_steps=400",
         f"--workdir={tmp_path}"]
  done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  rows = results["rows"]
  assert [r["width"] for r in rows] == [8, 16, 64] and results["headline"]["verdict"]
  for r in rows:
    assert 0 <= r["removable_max_mag_mean"] <= 1 and 1 <= r["elbow_mean"] < r["width"]
    assert r["test_error_mean"] == pytest.approx(np.mean([s["test_error"] for s in r["seeds"]]))
    assert r["steps_run"] <= 400
  assert (tmp_path / "figure.png").stat().st_size > 0
  bad = subprocess.run(cmd[:-1] + ["--dataset=xord", f"--workdir={tmp_path}/bad"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
  assert bad.returncode == 1 and "valid: mnist, fashion_mnist" in bad.stderr and not (tmp_path / "bad").exists()

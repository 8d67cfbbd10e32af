"""Smoke tests of `python -m experiments.prune_sweep`, run as a user would."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, "-m", "experiments.prune_sweep", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  proc = _run("--model=lenet", f"--workdir={workdir}", "--steps=300", "--layer=all", "--level_step=10")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc.stdout


def test_sweep_script_trains_then_writes_every_output(swept):
  workdir, stdout = swept
  out = os.path.join(workdir, "prune_sweep")
  for name in ("results.json", "curves.csv", "orders.npz", "figure2.png", "figure2.pdf"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  results = json.load(open(os.path.join(out, "results.json")))
  assert set(results["layers"]) == {"fc1", "fc2"}
  assert results["dataset"]["source"].startswith("bundled MNIST")
  fc1 = results["layers"]["fc1"]
  assert fc1["levels"][0] == 0 and fc1["levels"][-1] == 300
  assert fc1["criteria"]["max_mag"]["accuracy"][0] == pytest.approx(results["base_accuracy"])
  assert fc1["criteria"]["max_mag"]["accuracy"][-1] <= 0.2  # nothing left of fc1: chance-level guesses
  assert len(fc1["random"]["accuracy_std"]) == len(fc1["levels"])
  with np.load(os.path.join(out, "orders.npz"), allow_pickle=False) as orders:
    assert sorted(orders["fc1/max_fp"].tolist()) == list(range(300))
    assert len(orders.files) == 2 * 9
  assert "25%     50%     75%     90%" in stdout and "max_fp" in stdout


def test_checkpoint_of_another_model_names_both(swept):
  workdir, _ = swept
  proc = _run("--model=conv2", f"--checkpoint={workdir}", f"--workdir={workdir}_other")
  assert proc.returncode != 0
  assert "'lenet' model" in proc.stderr and "--model='conv2'" in proc.stderr


def test_unknown_layer_lists_prunable_layers(swept):
  workdir, _ = swept
  proc = _run("--model=lenet", f"--workdir={workdir}", "--layer=fc7")
  assert proc.returncode != 0 and "prunable layers: fc1, fc2" in proc.stderr

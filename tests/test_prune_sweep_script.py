"""`experiments.prune_sweep`'s main, called in-process with a tiny config: every output, the printed
table, bad input, and the end levels against accuracies computed without the pruning code."""

import contextlib
import csv
import io
import json
import os
import re

import numpy as np
import pytest

from experiments import prune_sweep as script
from redundancy_jax.analyses import criteria, pruning
from redundancy_jax.analyses.prune_sweep import PruneSweepConfig
from redundancy_jax.core.config import override
from redundancy_jax.core.runs import ConfigMismatch, Run
from redundancy_jax.models import create_model, topology


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The script's main on a fresh workdir: it trains LeNet for 300 steps, then sweeps both layers."""
  workdir = str(tmp_path_factory.mktemp("sweep"))
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    script.main(override(PruneSweepConfig(), model="lenet", workdir=workdir, steps=300, layer="all", level_step=10))
  return workdir, stdout.getvalue()


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
  assert len(fc1["random"]["accuracy_std"]) == len(fc1["levels"])
  with np.load(os.path.join(out, "orders.npz"), allow_pickle=False) as orders:
    assert sorted(orders["fc1/max_fp"].tolist()) == list(range(300))
    assert len(orders.files) == 2 * 17  # per layer: the 4 report's and 8 field's deterministic orders, 5 random
  # levels every 10 of 300 units: 75 -> 70 (a tie with 80: the first), 150, 225 -> 220, 270 removed
  assert "23%     50%     73%     90%" in stdout and "max_fp" in stdout
  assert "lenet on mnist, bundled MNIST test set (8,000/1,000/1,000)" in stdout  # the table's heading
  swept = criteria.offered(criteria.names(), topology.check(create_model("lenet"), "fc1"))[0]
  assert swept == [c for c in criteria.names() if not c.endswith("_bn")]  # LeNet has no BatchNorm
  for name in swept:  # the table's footer explains every criterion swept
    assert re.search(rf"\n  {name} +{re.escape(criteria.help_text(name))}\n", stdout), name
  with open(os.path.join(out, "curves.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 13 * sum(len(r["levels"]) for r in results["layers"].values())  # 12 orders and random's mean
  for row in rows:  # at most 6 significant digits; the std of equal accuracies is 0, not 1e-16
    for key in ("accuracy", "loss", "accuracy_std"):
      assert len(row[key].replace(".", "").lstrip("0")) <= 6 and "e" not in row[key], row  # not 0.9480000000000001
  assert {r["accuracy_std"] for r in rows if r["criterion"] == "random" and r["units_removed"] == "0"} == {"0"}


def test_another_models_checkpoint_and_an_unknown_layer_are_refused_naming_the_fix(swept, tmp_path):
  workdir, _ = swept
  with pytest.raises(ConfigMismatch, match="--model: the trained model used 'lenet', the flags ask 'conv2'"):
    script.main(override(PruneSweepConfig(), model="conv2", checkpoint=workdir, workdir=str(tmp_path / "other")))
  with pytest.raises(pruning.PruningError, match="prunable layers: fc1, fc2"):
    script.main(override(PruneSweepConfig(), model="lenet", workdir=workdir, layer="fc7"))
  assert not (tmp_path / "other").exists()


def _test_accuracies(workdir):
  """Test accuracy of the trained LeNet computed here, without the pruning code: unpruned, with all of
  fc1 removed, and with all of fc2 removed.

  With every unit of fc1 removed, fc2 reads zeros, so its activation is relu(b2) and the network predicts
  the one class argmax(relu(b2) W3 + b3) for every image; with every unit of fc2 removed it predicts
  argmax(b3). Either accuracy is the fraction of test labels equal to that class.
  """
  model, variables, ds, _ = Run(workdir).trained()
  unpruned = np.mean(np.argmax(np.asarray(model.apply(variables, ds.test_x)), -1) == ds.test_y)
  p = {name: {k: np.asarray(v, np.float64) for k, v in layer.items()} for name, layer in variables["params"].items()}
  without_fc1 = np.argmax(np.maximum(p["fc2"]["bias"], 0) @ p["fc3"]["kernel"] + p["fc3"]["bias"])
  without_fc2 = np.argmax(p["fc3"]["bias"])
  return len(ds.test_y), unpruned, {"fc1": np.mean(ds.test_y == without_fc1), "fc2": np.mean(ds.test_y == without_fc2)}


def test_sweep_end_levels_equal_accuracies_computed_without_pruning_code(swept):
  """Level 0 (nothing removed) of every curve is the unpruned model's test accuracy, and level m (all
  units removed) is the accuracy of the constant prediction the emptied network makes, whatever the
  criterion; both computed here from the trained variables, and level 0 also equals the test accuracy
  that training recorded."""
  workdir, _ = swept
  results = json.load(open(os.path.join(workdir, "prune_sweep", "results.json")))
  n, unpruned, emptied = _test_accuracies(workdir)
  assert results["config"]["examples"] == n
  exact = pytest.approx(unpruned, abs=0.5 / n)  # the same number of correct test images
  assert results["trained"]["test_accuracy"][0] == exact
  assert results["base_accuracy"] == exact
  for layer in ("fc1", "fc2"):
    r = results["layers"][layer]
    curves = {name: c["accuracy"] for name, c in r["criteria"].items()} | {"random": r["random"]["accuracy_mean"]}
    assert set(curves) == {c for c in criteria.names() if not c.endswith("_bn")}  # all LeNet offers
    for name, accuracy in curves.items():
      assert accuracy[0] == exact, (layer, name)
      assert accuracy[-1] == pytest.approx(emptied[layer], abs=0.5 / n), (layer, name)
    assert r["random"]["accuracy_std"][0] == 0 and r["random"]["accuracy_std"][-1] == 0

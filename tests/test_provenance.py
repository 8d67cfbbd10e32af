"""Runs that cannot mislead (issue 9): a reused model must match the flags given, a failed first attempt
does not lock its workdir, Ctrl-C saves and resumes, and the console stays readable."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from redundancy_jax import checkpoint, config, data, storage, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name, *args, **kwargs):
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT, capture_output=True,
                        text=True, **kwargs)


def _mtimes(folder):
  return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs}


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
  """A small LeNet trained on the bundled MNIST through the quick-start command, and its console output."""
  workdir = str(tmp_path_factory.mktemp("provenance") / "lenet")
  done = _script("prune_sweep", "--model=lenet", f"--workdir={workdir}", "--steps=250", "--level_step=50")
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done


@pytest.mark.parametrize("script, extra", [
  ("prune_sweep", ["--level_step=50"]),
  ("subspace", ["--num_ranks=4"]),
  ("dynamics", ["--ticks=5"]),
])
def test_every_analysis_refuses_a_model_trained_on_other_data(lenet_run, script, extra):
  workdir, _ = lenet_run
  before = _mtimes(workdir)
  done = _script(script, "--model=lenet", f"--workdir={workdir}", "--dataset=fashion_mnist", "--steps=250", *extra)
  assert done.returncode == 1, done.stdout[-2000:]
  assert "--dataset: the trained model used 'mnist', the flags ask 'fashion_mnist'" in done.stderr
  assert "--workdir=NEW" in done.stderr and "--dataset=mnist" in done.stderr  # the two fixes
  assert "--steps" not in done.stderr.split("\n")[1]  # only the differing flag is listed
  assert "Traceback" not in done.stderr
  assert _mtimes(workdir) == before  # nothing written, nothing overwritten


def test_flags_that_agree_reuse_the_model_and_outputs_record_it(lenet_run):
  workdir, _ = lenet_run
  done = _script("subspace", "--model=lenet", f"--workdir={workdir}", "--dataset=mnist", "--num_ranks=4")
  assert done.returncode == 0, done.stderr[-2000:]
  assert "reusing the lenet trained in" in done.stdout
  out = storage.read_json(os.path.join(workdir, "subspace", "fc1", "config.json"))
  assert out["training"]["dataset"] == "mnist" and out["training"]["steps"] == 250
  assert out["training"]["val_size"] == 1000  # the bundled split's real validation size


def test_subspace_table_refuses_a_model_trained_with_another_seed(lenet_run, tmp_path):
  root = tmp_path / "table"
  args = ["--models=lenet", f"--workdir_root={root}", "--num_seeds=1", "--steps=100"]
  assert _script("subspace_table", *args).returncode == 0
  done = _script("subspace_table", *args, "--seed=3")  # the workdir's name does not hold the seed
  assert done.returncode == 1 and "--seed: the trained model used 0, the flags ask 3" in done.stderr


def test_quick_start_console_is_short_and_quiet(lenet_run):
  _, done = lenet_run
  out = done.stdout + done.stderr
  assert len(out.strip().splitlines()) < 40, out
  for noise in ("INFO", "xla_bridge", "orbax", "Unable to initialize backend", "[250]", "0.9480000000000001"):
    assert noise not in out, noise
  done_line = next(line for line in out.splitlines() if line.startswith("done: test accuracy"))
  assert re.fullmatch(r"done: test accuracy \d+\.\d\d% at minimum validation loss \d\.\d{4} \(step [\d,]+\)", done_line)
  assert out.count("NO MNIST FILES GIVEN") == 1  # the bundled-data warning, once


def _tiny_mnist():
  full = data.load_bundled_mnist(0)
  return data.Dataset("mnist", full.source, full.train_x[:320], full.train_y[:320], full.val_x[:100],
                      full.val_y[:100], full.test_x[:100], full.test_y[:100], 10, full.mean, full.std)


def test_a_failed_first_attempt_does_not_lock_the_workdir(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
  workdir = str(tmp_path / "run")
  with pytest.raises(data.DataError, match="no source for cifar10"):
    train.train(config.TrainConfig(model="lenet", dataset="cifar10"), workdir, log=lambda s: None)
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  # a config.json left by an older attempt that never reached a checkpoint or a metrics line is fresh too
  storage.write_json(os.path.join(workdir, "config.json"), {"model": "lenet", "dataset": "cifar10"})
  cfg = config.TrainConfig(model="lenet", steps=20, batch_size=32, eval_every=10)
  results = train.train(cfg, workdir, dataset=_tiny_mnist(), log=lambda s: None)
  assert results["config"]["steps"] == 20
  assert storage.read_json(os.path.join(workdir, "config.json"))["dataset"] == "mnist"
  # once a run has started, another config is an error listing the difference
  with pytest.raises(checkpoint.ConfigMismatch, match="steps: workdir has 20, this run asks 30"):
    train.train(config.TrainConfig(model="lenet", steps=30, batch_size=32, eval_every=10), workdir,
                dataset=_tiny_mnist(), log=lambda s: None)


def test_sigint_saves_and_the_rerun_ends_like_an_uninterrupted_run(tmp_path):
  args = ["--model=lenet", "--steps=6000", "--eval_every=250"]
  full = _script("train", *args, f"--workdir={tmp_path / 'full'}")
  assert full.returncode == 0, full.stderr[-2000:]
  workdir = tmp_path / "stopped"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args, f"--workdir={workdir}"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while not (workdir / "metrics.jsonl").exists() and time.time() < deadline:  # the first epoch is done
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-2000:]
  assert "Traceback" not in stderr
  step = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
  assert f"interrupted at step {step}: rerun the same command to resume" in stderr
  assert 0 < step < 6000 and checkpoint.manager(str(workdir)).latest_step() == step
  rerun = _script("train", *args, f"--workdir={workdir}")
  assert rerun.returncode == 0 and f"resuming from step {step:,}" in rerun.stdout, rerun.stderr[-2000:]
  a = storage.load_tree(checkpoint.trained_path(str(tmp_path / "full")))
  b = storage.load_tree(checkpoint.trained_path(str(workdir)))
  for key in a["params"]:
    np.testing.assert_array_equal(a["params"][key]["kernel"], b["params"][key]["kernel"])
  assert storage.read_json(str(workdir / "results.json"))["test_accuracy"] == \
    storage.read_json(str(tmp_path / "full" / "results.json"))["test_accuracy"]


def test_an_unknown_model_is_rejected_before_anything_trains(tmp_path):
  done = _script("prune_sweep", "--model=lenet5", f"--workdir={tmp_path / 'x'}")
  assert done.returncode == 1 and "unknown model 'lenet5'; valid models: lenet, conv2" in done.stderr
  assert "training" not in done.stdout and not (tmp_path / "x").exists()

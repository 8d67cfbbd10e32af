"""What only a real process shows: Ctrl-C and SIGKILL with a rerun that ends exactly like an unbroken run,
two processes on one workdir, exit codes and messages of bad input, and the README's quick-start command."""

import json
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import ROOT, mtimes, quiet, script
from redundancy_jax.analyses import criteria
from redundancy_jax.core import storage, train
from redundancy_jax.core.config import TrainConfig
from redundancy_jax.core.runs import Run
from redundancy_jax.models import create_model, topology

# The run both signal tests interrupt: long enough (32 epochs of 125 steps) to be stopped in the middle.
ARGS = ["--model=lenet", "--steps=4000", "--eval_every=250", "--checkpoint_every_secs=0"]


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
  """The same run uninterrupted, trained in this process."""
  workdir = str(tmp_path_factory.mktemp("unbroken"))
  results = train.train(TrainConfig(model="lenet", steps=4000, eval_every=250), workdir, checkpoint_every_secs=0,
                        log=quiet)
  return workdir, results


_STARTED: list[subprocess.Popen] = []  # the runs `_start` started, killed after each test if still running


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
  yield
  while _STARTED:
    proc = _STARTED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _start(workdir, *args):
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *ARGS, f"--workdir={workdir}", *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _STARTED.append(proc)
  return proc


def _wait_for_epochs(proc, workdir, epochs: int, timeout: float = 600):
  """Until `epochs` lines of metrics.jsonl; `timeout` only turns a hang into a failure."""
  deadline = time.time() + timeout
  metrics = workdir / "metrics.jsonl"
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= epochs:
      return
    time.sleep(0.02)
  raise AssertionError(f"the run ended or stalled before {epochs} epochs: {proc.poll()}")


def _same_as_unbroken(workdir, unbroken):
  ref_dir, ref = unbroken
  got = storage.read_json(str(workdir / "results.json"))
  for key in ("best_step", "best_val_loss", "test_accuracy", "test_loss"):
    assert got[key] == ref[key], key
  jax.tree.map(np.testing.assert_array_equal, storage.load_tree(Run(str(workdir)).trained_path),
               storage.load_tree(Run(ref_dir).trained_path))


@pytest.mark.e2e
def test_sigint_saves_and_the_rerun_ends_like_an_unbroken_run(tmp_path, unbroken):
  workdir = tmp_path / "stopped"
  proc = _start(workdir)
  _wait_for_epochs(proc, workdir, 1)
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 130, stderr[-2000:]
  assert "Traceback" not in stderr
  step = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
  assert f"interrupted at step {step}: rerun the same command to resume" in stderr
  assert 0 < step < 4000 and Run(str(workdir)).checkpoints().latest_step() == step
  rerun = script("train", *ARGS, f"--workdir={workdir}")
  assert rerun.returncode == 0 and f"resuming from step {step:,}" in rerun.stdout, rerun.stderr[-2000:]
  _same_as_unbroken(workdir, unbroken)


@pytest.mark.e2e
def test_sigkill_then_rerun_ends_like_an_unbroken_run(tmp_path, unbroken):
  workdir = tmp_path / "killed"
  proc = _start(workdir)
  _wait_for_epochs(proc, workdir, 4)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert not (workdir / "results.json").exists()
  rerun = script("train", *ARGS, f"--workdir={workdir}")
  assert rerun.returncode == 0 and "resuming from step" in rerun.stdout, rerun.stderr[-2000:]
  _same_as_unbroken(workdir, unbroken)


@pytest.mark.e2e
def test_a_second_process_on_a_workdir_in_use_exits_at_once_and_writes_nothing(tmp_path):
  """Two real processes: the second is refused, naming the first's pid, and leaves the folder as it was;
  once the first is killed, its lock is taken over by the next run."""
  workdir = tmp_path / "shared"
  first = _start(workdir)
  _wait_for_epochs(first, workdir, 1)
  before = mtimes(workdir)
  second = script("prune_sweep", "--model=lenet", f"--workdir={workdir}", "--steps=4000", "--eval_every=250")
  assert second.returncode == 1, second.stderr[-2000:]
  assert f"error: workdir {workdir} is in use by process {first.pid}" in second.stderr
  assert "Traceback" not in second.stderr and "training" not in second.stdout  # refused before any work
  changed = {p for p, t in mtimes(workdir).items() if before.get(p) != t}
  assert not any("prune_sweep" in p for p in changed)  # only the first process wrote (its epochs go on)
  first.send_signal(signal.SIGKILL)
  first.wait()
  after = script("train", *ARGS, f"--workdir={workdir}")  # the dead process's lock is taken over
  assert after.returncode == 0 and "resuming from step" in after.stdout, after.stderr[-2000:]


def test_unknown_model_exits_with_the_valid_names_before_anything_runs(tmp_path):
  done = script("prune_sweep", "--model=lenet5", f"--workdir={tmp_path / 'x'}")
  assert done.returncode == 1 and done.stderr.strip().splitlines() == [
    "error: unknown model 'lenet5'; valid: a registered model (lenet, conv2, conv4, conv6, vgg19, mlp) or your own "
    "Flax model as FILE.py:FACTORY or MODULE:FACTORY (a callable factory(num_classes))"], done.stderr
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "x").exists()
  bad = script("prune_sweep", "--model=lenet", f"--workdir={tmp_path / 'y'}", "--layer=fc9")
  assert bad.returncode == 1 and "unknown layer 'fc9' of lenet; prunable layers: fc1, fc2" in bad.stderr, bad.stderr
  assert "training" not in bad.stdout and not (tmp_path / "y").exists()  # refused before training


@pytest.mark.e2e
def test_readme_quick_start_command_with_fewer_steps(tmp_path):
  """The README's main command, as a user types it (fewer steps so that it is quick): a short, quiet console."""
  done = script("prune_sweep", "--model=lenet", f"--workdir={tmp_path}", "--steps=250", "--level_step=50")
  assert done.returncode == 0, done.stderr[-3000:]
  out = done.stdout + done.stderr
  swept = len(criteria.offered(criteria.names(), topology.check(create_model("lenet"), "fc1"))[0])
  # 18 fixed lines (training's 6, the sweep's, the data warning, the table's headings, the files written
  # and 6 blank ones) and, per criterion (random included), a row of the table and a line of its footer
  assert len(out.strip().splitlines()) == 18 + 2 * swept, out
  for noise in ("INFO", "xla_bridge", "orbax", "Unable to initialize backend", "Traceback"):
    assert noise not in out, noise
  # every number rounded for reading (no float repr such as 0.9480000000000001); absl's time stamps aside
  ours = "\n".join(re.sub(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ", "", line) for line in out.splitlines())
  assert not re.findall(r"\d\.\d{5,}", ours), re.findall(r"\S*\d\.\d{5,}\S*", ours)
  assert "ETA estimating" in out  # the first, compiling epoch gives no ETA
  assert out.count("NO MNIST FILES GIVEN") == 1  # the bundled-data warning, once
  # levels every 50 of 300 units: the nearest to 75, 150, 225 and 270 removed are 50 (a tie with 100: the
  # first), 150, 200 and 250 units, so the header says what was swept
  assert "17%     50%     67%     83%" in done.stdout and (tmp_path / "prune_sweep" / "figure2.png").exists()

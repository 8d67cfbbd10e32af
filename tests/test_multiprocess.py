"""Real multi-process runs on loopback: 2 processes x 2 CPU devices linked by `jax.distributed` (gloo
collectives), against 1 process x 4 devices and 1 process x 1 device; a killed process; a process started
with another configuration."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import ROOT, quiet
from redundancy_jax.analyses.prune_sweep import PruneSweepConfig, run as prune_sweep
from redundancy_jax.core import storage, train
from redundancy_jax.core.config import TrainConfig, override
from redundancy_jax.core.runs import Run

# LeNet with 4 seeds for 400 steps, an epoch every 50 (the kill test stops it in the middle).
SEEDS, STEPS, EVAL_EVERY = 4, 400, 50
TRAIN = ["--model=lenet", f"--num_seeds={SEEDS}", f"--steps={STEPS}", f"--eval_every={EVAL_EVERY}",
         "--checkpoint_every_secs=0"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(script: str, args: list[str], processes: int = 2, devices: int = 2, extra=None) -> list[subprocess.Popen]:
  """`python -m experiments.<script> args` as `processes` processes of `devices` CPU devices each, on
  loopback; `extra[i]` adds flags to process i."""
  address = f"127.0.0.1:{_free_port()}"
  cluster = [f"--coordinator_address={address}", f"--num_processes={processes}", f"--cpu_devices={devices}",
             "--heartbeat_timeout=5"]
  return [subprocess.Popen([sys.executable, "-m", f"experiments.{script}", *args, *cluster, f"--process_id={i}",
                            *(extra or {}).get(i, [])], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for i in range(processes)]


def _finish(procs, timeout: float = 300) -> list[tuple[int, str, str]]:
  return [(p.wait(timeout), *p.communicate()) for p in procs]


def _ok(procs) -> list[str]:
  """Waits for every process; their stdout, after checking that each exited 0."""
  outs = _finish(procs)
  for i, (code, out, err) in enumerate(outs):
    assert code == 0, f"process {i} exited {code}:\n{out[-2000:]}\n{err[-3000:]}"
  return [out for _, out, _ in outs]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  """The LeNet run trained by 2 processes x 2 devices (each device trains one of the 4 seeds)."""
  workdir = tmp_path_factory.mktemp("two_processes")
  outs = _ok(_start("train", [*TRAIN, f"--workdir={workdir}"]))
  ours = lambda out: [line for line in out.splitlines() if not line.startswith("[Gloo]")]  # gloo's C++ prints
  assert "[process 1] " not in outs[0] and all(line.startswith("[process 1] ") for line in ours(outs[1])), repr(outs[1])
  return workdir


def _trained(workdir):
  return storage.read_json(str(workdir / "results.json")), storage.load_tree(Run(str(workdir)).trained_path)


def test_two_processes_train_like_one_process_of_four_devices(two_processes, tmp_path):
  """The same per-device program on the same data: bit-identical parameters and results (no tolerance)."""
  proc = subprocess.run([sys.executable, "-m", "experiments.train", *TRAIN, f"--workdir={tmp_path}", "--cpu_devices=4"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (got, got_params), (ref, ref_params) = _trained(two_processes), _trained(tmp_path)
  assert got["devices"] == ref["devices"] == 4 and got["num_processes"] == 2 and ref["num_processes"] == 1
  for key in ("best_step", "best_val_loss", "test_accuracy", "test_loss"):
    assert got[key] == ref[key], key
  jax.tree.map(np.testing.assert_array_equal, got_params, ref_params)


def test_two_processes_train_like_one_device(two_processes, tmp_path):
  """One device trains the 4 seeds vmapped, a batched program that XLA may round differently from the
  one-seed program of each device: parameters equal to 1e-5 relative, test accuracies (whole counts of
  correct images over 1,000) equal to within float32 rounding of the division."""
  ref = train.train(TrainConfig(model="lenet", num_seeds=SEEDS, steps=STEPS, eval_every=EVAL_EVERY), str(tmp_path),
                    checkpoint_every_secs=0, log=quiet)
  got, got_params = _trained(two_processes)
  assert got["best_step"] == ref["best_step"]
  np.testing.assert_allclose(got["test_accuracy"], ref["test_accuracy"], rtol=1e-6)
  np.testing.assert_allclose(got["test_loss"], ref["test_loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got_params,
               storage.load_tree(Run(str(tmp_path)).trained_path))


def test_two_processes_sweep_like_one(trained_lenet, tmp_path):
  """The sweep's data chunks split over 4 devices of 2 processes: the same correct counts, so the same
  accuracies; the summed losses in another order (float32 rounding, 1e-5 relative)."""
  workdir, _ = trained_lenet
  args = ["--layer=fc1", "--level_step=25", "--random_seeds=2", "--max_examples=600", f"--checkpoint={workdir}"]
  _ok(_start("prune_sweep", [*args, f"--workdir={tmp_path / 'two'}"]))
  prune_sweep(override(PruneSweepConfig(), layer="fc1", level_step=25, random_seeds=2, max_examples=600,
                       checkpoint=workdir, workdir=str(tmp_path / "one")))
  got, ref = (storage.read_json(str(tmp_path / w / "prune_sweep" / "results.json"))["layers"]["fc1"]
              for w in ("two", "one"))
  assert got["levels"] == ref["levels"] and got["base_accuracy"] == ref["base_accuracy"]
  curves = lambda r: {**r["criteria"], "random": {"accuracy": r["random"]["accuracy_mean"],
                                                  "loss": r["random"]["loss_mean"]}}
  for criterion, ref_curve in curves(ref).items():
    assert curves(got)[criterion]["accuracy"] == ref_curve["accuracy"], criterion
    np.testing.assert_allclose(curves(got)[criterion]["loss"], ref_curve["loss"], rtol=1e-5)


def test_a_killed_process_stops_the_other_and_the_rerun_resumes(two_processes, tmp_path):
  procs = _start("train", [*TRAIN, f"--workdir={tmp_path}"])
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
    assert time.time() < deadline and procs[0].poll() is None, _finish(procs)
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  code, _, err = _finish(procs[:1], timeout=60)[0]
  assert code != 0 and time.time() - killed < 60
  assert "error: process 1 sent no news for 5 s (killed, crashed or preempted?); stopping." in err, err[-2000:]
  procs[1].wait()
  outs = _ok(_start("train", [*TRAIN, f"--workdir={tmp_path}"]))
  assert "resuming from step" in outs[0]
  (got, got_params), (ref, ref_params) = _trained(tmp_path), _trained(two_processes)
  assert got["test_accuracy"] == ref["test_accuracy"] and got["best_step"] == ref["best_step"]
  jax.tree.map(np.testing.assert_array_equal, got_params, ref_params)


def test_a_process_with_another_configuration_is_refused(tmp_path):
  procs = _start("train", [*TRAIN, f"--workdir={tmp_path}"], extra={1: ["--learning_rate=0.5"]})
  for code, _, err in _finish(procs, timeout=120):
    assert code == 1 and "process(es) 1 started with another configuration than process 0" in err, err[-2000:]
  assert not (tmp_path / "metrics.jsonl").exists()


def test_a_workdir_not_every_process_sees_is_refused(tmp_path):
  """The same relative --workdir from two working directories: two folders, as on two machines without
  a shared filesystem."""
  address = f"127.0.0.1:{_free_port()}"
  procs = []
  for i in range(2):
    (tmp_path / str(i)).mkdir()
    procs.append(subprocess.Popen(
      [sys.executable, "-m", "experiments.train", *TRAIN, "--workdir=run", f"--coordinator_address={address}",
       "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout=5"],
      cwd=tmp_path / str(i), env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True))
  for code, _, err in _finish(procs, timeout=120):
    assert code == 1 and "process(es) 1 do not see" in err and "shares" in err, err[-2000:]
  assert not (tmp_path / "0" / "run" / "metrics.jsonl").exists()

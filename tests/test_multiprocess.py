"""Real multi-process runs on loopback: 2 processes x 2 CPU devices linked by `jax.distributed` (gloo
collectives), against 1 process x 4 devices and 1 process x 1 device; a killed process; a process started
with another configuration.

The coordinator listens on a Unix socket in a fresh private folder (`JAX_COORDINATOR_BIND_ADDRESS`, read by
`jax.distributed.initialize`), not on a TCP port: a port chosen free can be taken before the coordinator
binds it, and gRPC binds with SO_REUSEPORT, so two coordinators on one port (two test runs at once) both
start and their processes may reach the wrong one. A socket path of its own cannot collide. The processes
watch each other with the default `--heartbeat_timeout` (30 s), the kill test with a third of it."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest

from helpers import ROOT, quiet, script
from redundancy_jax.analyses.prune_sweep import PruneSweepConfig, run as prune_sweep
from redundancy_jax.core import storage, train
from redundancy_jax.core.config import TrainConfig, override
from redundancy_jax.core.parallel import ClusterConfig
from redundancy_jax.core.runs import Run

# LeNet with 4 seeds for 400 steps, an epoch every 50 (the kill test stops it in the middle).
SEEDS, STEPS, EVAL_EVERY = 4, 400, 50
TRAIN = ["--model=lenet", f"--num_seeds={SEEDS}", f"--steps={STEPS}", f"--eval_every={EVAL_EVERY}",
         "--checkpoint_every_secs=0"]
# Seconds of silence after which the kill test's processes name a process lost: a third of the default
# (ClusterConfig().heartbeat_timeout, 30 s), still ten beats of the watchdog's thread, which beats once a
# second whatever the computation does.
HEARTBEAT = ClusterConfig().heartbeat_timeout // 3
HANG = 600  # seconds after which a launch counts as hung (a few times its time on a loaded 2-core machine)
pytestmark = pytest.mark.e2e  # every test here starts several processes
_STARTED: list[subprocess.Popen] = []  # every process of this module, stopped after each test
_SOCKETS: list[str] = []  # their coordinators' folders


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
  yield
  while _STARTED:
    p = _STARTED.pop()
    if p.poll() is None:
      p.kill()
      p.wait()
  while _SOCKETS:
    shutil.rmtree(_SOCKETS.pop(), ignore_errors=True)


def _start(name: str, args: list[str], processes: int = 2, devices: int | None = 2, extra=None, cwds=None,
           env=None) -> list[subprocess.Popen]:
  """`python -m experiments.<name> args` as `processes` processes of `devices` CPU devices each (None: the
  default), their coordinator on a Unix socket of their own; `extra[i]` adds flags to process i, which runs
  in `cwds[i]` (default: the repository root)."""
  folder = tempfile.mkdtemp(prefix="rj-coordinator-")
  _SOCKETS.append(folder)
  address = f"unix:{folder}/socket"
  cluster = [f"--coordinator_address={address}", f"--num_processes={processes}"]
  cluster += [f"--cpu_devices={devices}"] if devices else []
  env = {**os.environ, **(env or {}), "JAX_COORDINATOR_BIND_ADDRESS": address}
  procs = []
  for i in range(processes):
    command = [sys.executable, "-m", f"experiments.{name}", *args, *cluster, f"--process_id={i}",
               *(extra or {}).get(i, [])]
    procs.append(subprocess.Popen(command, cwd=(cwds or {}).get(i, ROOT), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  _STARTED.extend(procs)
  return procs


def _finish(procs, timeout: float = HANG) -> list[tuple[int, str, str]]:
  """(exit code, stdout, stderr) of each process; all of them killed, and the test failed with their
  output, when one is still running after `timeout` seconds (a hang: no run here takes that long)."""
  deadline = time.monotonic() + timeout
  outs = []
  for i, p in enumerate(procs):
    try:
      out, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      outs += [(None, *q.communicate()) for q in procs[i:]]
      tails = "\n".join(f"process {j}:\n{out[-1500:]}\n{err[-1500:]}" for j, (_, out, err) in enumerate(outs))
      raise AssertionError(f"process {i} still running after {timeout:g} s (hung?); killed all:\n{tails}") from None
    outs.append((p.returncode, out, err))
  return outs


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
  assert "[process 1] " not in outs[0], outs[0]
  unprefixed = [line for line in outs[1].splitlines() if not line.startswith("[process 1] ")]
  assert not unprefixed, f"lines of process 1 that do not say whose they are: {unprefixed[:5]}"  # C++ prints too
  return workdir


def _trained(workdir):
  return storage.read_json(str(workdir / "results.json")), storage.load_tree(Run(str(workdir)).trained_path)


def test_two_processes_train_like_one_process_of_four_devices(two_processes, tmp_path):
  """The same per-device program on the same data: bit-identical parameters and results (no tolerance)."""
  proc = script("train", *TRAIN, f"--workdir={tmp_path}", "--cpu_devices=4", timeout=HANG)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (got, got_params), (ref, ref_params) = _trained(two_processes), _trained(tmp_path)
  assert got["devices"] == ref["devices"] == 4 and got["num_processes"] == 2 and ref["num_processes"] == 1
  for key in ("best_step", "best_val_loss", "test_accuracy", "test_loss"):
    assert got[key] == ref[key], key
  jax.tree.map(np.testing.assert_array_equal, got_params, ref_params)


def test_two_processes_of_one_device_train_in_waves_like_four_devices(two_processes, tmp_path):
  """2 processes x 1 device hold 2 of the 4 seeds each, trained one per device at a time
  (`epochs.waves_epoch`): bit for bit the one-replica-per-device training of 4 devices (parameters,
  validation losses, best steps). The final test evaluation is one program of 2 replicas per device,
  which may round the division of the correct counts differently (float32 rounding)."""
  _ok(_start("train", [*TRAIN, f"--workdir={tmp_path}"], devices=1))
  (got, got_params), (ref, ref_params) = _trained(tmp_path), _trained(two_processes)
  assert got["devices"] == 2 and got["num_processes"] == 2
  jax.tree.map(np.testing.assert_array_equal, got_params, ref_params)
  for key in ("best_step", "best_val_loss"):
    assert got[key] == ref[key], key
  np.testing.assert_allclose(got["test_accuracy"], ref["test_accuracy"], rtol=1e-6)
  np.testing.assert_allclose(got["test_loss"], ref["test_loss"], rtol=1e-6)


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
  procs = _start("train", [*TRAIN, f"--workdir={tmp_path}", f"--heartbeat_timeout={HEARTBEAT}"])
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.monotonic() + HANG
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
    assert procs[0].poll() is None, _finish(procs)
    assert time.monotonic() < deadline, f"no second epoch after {HANG} s (hung?)"
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  code, _, err = _finish(procs)[0]  # process 0 stops by itself once process 1 is silent for HEARTBEAT seconds
  assert code == 1, err[-2000:]
  assert f"error: process 1 sent no news for {HEARTBEAT} s (killed, crashed or preempted?); stopping." in err, \
    err[-2000:]
  outs = _ok(_start("train", [*TRAIN, f"--workdir={tmp_path}"]))
  assert "resuming from step" in outs[0]
  (got, got_params), (ref, ref_params) = _trained(tmp_path), _trained(two_processes)
  assert got["test_accuracy"] == ref["test_accuracy"] and got["best_step"] == ref["best_step"]
  jax.tree.map(np.testing.assert_array_equal, got_params, ref_params)


def test_a_process_with_another_configuration_is_refused(tmp_path):
  procs = _start("train", [*TRAIN, f"--workdir={tmp_path}"], extra={1: ["--learning_rate=0.5"]})
  for code, _, err in _finish(procs):
    assert code == 1 and "process(es) 1 started with another configuration than process 0" in err, err[-2000:]
  assert not (tmp_path / "metrics.jsonl").exists()


def test_a_workdir_not_every_process_sees_is_refused(tmp_path):
  """The same relative --workdir from two working directories: two folders, as on two machines without
  a shared filesystem."""
  for i in range(2):
    (tmp_path / str(i)).mkdir()
  procs = _start("train", [*TRAIN, "--workdir=run"], devices=None, cwds={i: tmp_path / str(i) for i in range(2)},
                 env={"PYTHONPATH": ROOT})
  for code, _, err in _finish(procs):
    assert code == 1 and "process(es) 1 do not see" in err and "shares" in err, err[-2000:]
  assert not (tmp_path / "0" / "run" / "metrics.jsonl").exists()

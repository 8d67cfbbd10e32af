"""What a user sees when files are damaged, folders unwritable, options invalid or a process lost: one line
naming the file or process and the fix, nothing else lost; and following the fix ends with the numbers an
unbroken run gives. Only the project's own refusals (`errors.UserError`) get the one-line form."""

import errno
import os
import shutil
import textwrap

import jax
import numpy as np
import pytest

from helpers import python, quiet
from redundancy_jax.analyses import prune_sweep
from redundancy_jax.core import config, epochs, errors, processes, steps, storage, train
from redundancy_jax.core.config import TrainConfig
from redundancy_jax.core.runs import Run

TINY = TrainConfig(model="lenet", steps=250, eval_every=50)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished 250-step LeNet run (two epochs of the bundled data) and its results."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  return workdir, train.train(TINY, workdir, log=quiet)


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])


def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


@pytest.mark.parametrize("name", ["results.json", "config.json", "trained_variables.npz"])
def test_a_truncated_run_file_is_named_with_its_fix(finished, tmp_path, name):
  workdir = _copy(finished[0], tmp_path / "run")
  _truncate(os.path.join(workdir, name))
  cfg = config.override(prune_sweep.PruneSweepConfig(), workdir=workdir, max_examples=100, level_step=100)
  with pytest.raises(errors.DamagedFile) as e:
    prune_sweep.run(cfg, log=quiet)
  message = str(e.value)
  assert message.startswith(os.path.join(workdir, name) + " is damaged (") and "\n" not in message
  assert ("new --workdir" in message) if name == "config.json" else ("resumes from the last checkpoint" in message)
  assert not os.path.exists(os.path.join(workdir, "prune_sweep"))  # nothing written under a damaged run


def test_following_the_fix_for_damaged_results_gives_the_same_model(finished, tmp_path):
  workdir = _copy(finished[0], tmp_path / "run")
  for name in ("results.json", "trained_variables.npz"):  # what the message says to delete
    os.remove(os.path.join(workdir, name))
  again = train.train(TINY, workdir, log=quiet)
  assert again["test_accuracy"] == finished[1]["test_accuracy"]
  assert again["best_step"] == finished[1]["best_step"] and again["steps_run"] == 250
  ours, theirs = (storage.load_tree(os.path.join(w, "trained_variables.npz")) for w in (workdir, finished[0]))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)


def test_a_damaged_checkpoint_is_named_and_the_older_one_resumes_exactly(finished, tmp_path):
  workdir = _copy(finished[0], tmp_path / "run")
  for name in ("results.json", "trained_variables.npz"):
    os.remove(os.path.join(workdir, name))
  newest = max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  for folder, _, files in os.walk(os.path.join(workdir, "checkpoints", str(newest))):
    for f in files:
      if os.path.basename(folder) == "d":  # the array data
        _truncate(os.path.join(folder, f))
  with pytest.raises(errors.DamagedFile) as e:
    train.train(TINY, workdir, log=quiet)
  assert str(e.value).startswith(os.path.join(os.path.abspath(workdir), "checkpoints", str(newest)) + " is damaged")
  assert "resumes from the checkpoint of step 125" in str(e.value)
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(newest)))
  again = train.train(TINY, workdir, log=quiet)
  assert again["test_accuracy"] == finished[1]["test_accuracy"] and again["best_val_loss"] == finished[1]["best_val_loss"]


def test_a_missing_dataset_fails_before_training_is_announced_and_leaves_no_workdir(tmp_path):
  lines, workdir = [], str(tmp_path / "new")
  cfg = config.override(prune_sweep.PruneSweepConfig(), workdir=workdir, model="lenet", dataset="cifar10",
                        data_dir=str(tmp_path / "empty"))
  with pytest.raises(errors.UserError):
    prune_sweep.run(cfg, log=lines.append)
  assert not any("training" in line for line in lines)
  assert not os.path.exists(workdir)  # not even a lock file


def test_non_positive_training_options_are_named():
  with pytest.raises(errors.BadOption, match=r"^--num_seeds=0: must be positive"):
    TrainConfig(num_seeds=0).resolve()
  with pytest.raises(errors.BadOption, match=r"^--steps=-1, --eval_every=0: must be positive"):
    TrainConfig(steps=-1, eval_every=0).resolve()


def test_unwritable_folders_are_one_line_and_other_os_errors_are_not():
  message = errors.unwritable(PermissionError(errno.EACCES, "Permission denied", "/data/runs/lenet/.lock"))
  assert message == ("cannot write /data/runs/lenet/.lock: Permission denied; give a --workdir you can write to, or "
                     "free space / fix the permissions of /data/runs/lenet")
  assert errors.unwritable(OSError(errno.EROFS, "Read-only file system", "/x")).startswith("cannot write /x: Read-only")
  assert errors.unwritable(OSError(errno.EBADF, "Bad file descriptor")) is None  # a bug, not a user's folder


def test_a_python_stepped_epoch_paused_for_checkpoints_equals_one_unbroken_epoch():
  """Long CPU epochs (convolutions step from Python) save mid-epoch checkpoints: stopping after every few
  steps and going on from the state gives the same parameters and metrics bit for bit."""
  from redundancy_jax.core import data

  cfg = TrainConfig(model="conv2", dataset="random_images", width=0.125, steps=12, batch_size=8, eval_every=5,
                    val_size=40).resolve()
  ds = data.random_images(0, shape=(16, 16, 3), n_train=96, n_val=40, n_test=40)
  setup = steps.make_setup(cfg, ds)
  train_data, val_split, _ = steps.device_data(setup, ds)
  whole, metrics_whole, done = epochs.run_epoch(setup, steps.init_state(setup, ds.image_shape), train_data,
                                               val_split, loop="python")
  assert done and setup.steps_per_epoch == 12
  state, parts, calls = steps.init_state(setup, ds.image_shape), [], 0
  while True:
    calls += 1
    state, part, done = epochs.run_epoch(setup, state, train_data, val_split, loop="python", pause=lambda: True)
    parts.append(jax.device_get(part))
    state = steps.place_state(jax.device_get(state), setup.mesh)  # as a checkpoint restores it
    if done:
      break
  assert calls == 12 and int(state.epoch) == 1 and int(whole.epoch) == 1
  for a, b in zip(jax.tree.leaves(jax.device_get(whole)), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(a, b)
  for k in metrics_whole:
    np.testing.assert_array_equal(np.asarray(metrics_whole[k]), np.concatenate([p[k] for p in parts]))


def test_results_files_get_the_umask_mode_and_the_umask_is_never_changed(tmp_path):
  old = os.umask(0o027)
  try:
    storage.write_json(str(tmp_path / "r.json"), {"a": 1})
    assert os.stat(tmp_path / "r.json").st_mode & 0o777 == 0o640
    assert storage._read_umask() == 0o027
    assert os.umask(0o027) == 0o027  # reading it left it as it was
  finally:
    os.umask(old)


def test_jax_internals_we_rely_on_are_where_we_read_them():
  """The watchdog reads JAX's distributed client (no public API exposes its key-value store), and
  `configure_xla_cpu` asks whether the backend started: this fails when JAX moves either."""
  from jax._src import distributed, xla_bridge
  from jax._src.lib import _jax

  assert hasattr(distributed.global_state, "client") and callable(xla_bridge.backends_are_initialized)
  assert all(hasattr(_jax.DistributedRuntimeClient, m) for m in ("key_value_set", "key_value_try_get"))
  assert processes._runtime_client is not None


# ----------------------------------------------------------------------------- what a process prints


def test_only_our_refusals_are_one_line_and_a_bug_keeps_its_traceback(tmp_path):
  code = textwrap.dedent("""
    import dataclasses, sys
    from experiments import cli
    from redundancy_jax.core import errors
    from redundancy_jax.core.config import option

    @dataclasses.dataclass(frozen=True)
    class Cfg:
      what: str = option("refusal", "what to raise")

    def main(cfg):
      if cfg.what == "refusal":
        raise errors.BadOption("--what=refusal is not valid; valid: nothing")
      if cfg.what == "readonly":
        raise PermissionError(13, "Permission denied", "/ro/runs/x/.lock")
      raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")  # a bug of ours

    cli.run(main, Cfg)
  """)
  out = {what: python("-c", code, f"--what={what}", timeout=300) for what in ("refusal", "readonly", "bug")}
  assert out["refusal"].returncode == 1 and out["refusal"].stderr.strip() == (
    "error: --what=refusal is not valid; valid: nothing")
  assert out["readonly"].returncode == 1 and out["readonly"].stderr.strip().splitlines() == [
    "error: cannot write /ro/runs/x/.lock: Permission denied; give a --workdir you can write to, or free space / "
    "fix the permissions of /ro/runs/x"]
  assert out["bug"].returncode == 1 and "Traceback (most recent call last)" in out["bug"].stderr
  assert "ValueError: operands could not be broadcast" in out["bug"].stderr


@pytest.mark.e2e
def test_a_process_other_than_0_prefixes_every_line_and_names_a_lost_coordinator():
  """`processes.supervise` relays a child's file descriptors with "[process 1] " (lines of C++ code too) and
  replaces JAX's fatal log after the coordinator's loss by one line of ours."""
  code = textwrap.dedent("""
    import os, sys, time
    from redundancy_jax.core import processes
    processes.supervise()
    print("from python", flush=True)
    os.write(1, b"[Gloo] Rank 1 is connected to 1 peer ranks\\n")  # C++ code writes the descriptor itself
    if sys.argv[-1] == "lost":
      os.write(2, b"F1202 09:25:26.684633   18746 client.cc:91] Terminating process because the JAX distributed "
                  b"service detected fatal errors. This most likely indicates that another task died\\n")
      os.write(2, b"*** Check failure stack trace: ***\\n    @     0x7f00 absl::log_internal\\n")
      os.abort()
    os.write(2, b"W1202 09:25:26.684633   18746 preemption_sync_manager.cc:147] a runtime warning\\n")
    sys.exit(3)
  """)
  lost = python("-c", code, "--process_id=1", "lost", timeout=120)
  assert lost.returncode == 1
  assert lost.stdout.splitlines() == ["[process 1] from python", "[process 1] [Gloo] Rank 1 is connected to 1 peer ranks"]
  assert lost.stderr.strip().splitlines() == [
    "[process 1] error: process 0 (the coordinator) is gone (killed, crashed or preempted?); stopping. Start every "
    "process again with the same command: a training run resumes from its last checkpoint."]
  ok = python("-c", code, "--process_id=1", "fine", timeout=120)
  assert ok.returncode == 3  # the child's own status
  assert ok.stderr.strip().splitlines() == [
    "[process 1] W1202 09:25:26.684633   18746 preemption_sync_manager.cc:147] a runtime warning"]
  alone = python("-c", code, "--process_id=0", "fine", timeout=120)  # process 0 is not supervised
  assert alone.stdout.splitlines()[0] == "from python"


def test_known_process_id_reads_the_flag_or_the_cluster():
  assert processes.known_process_id(["x", "--process_id=3"], {}) == 3
  assert processes.known_process_id(["x", "--process_id", "2"], {}) == 2
  assert processes.known_process_id(["x"], {"SLURM_NTASKS": "4", "SLURM_PROCID": "1"}) == 1
  assert processes.known_process_id(["x"], {"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
  assert processes.known_process_id(["x"], {}) is None

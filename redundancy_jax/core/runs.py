"""A training run's folder, owned by one object: its paths, stored config, whether it is trained, loading
what it holds, the reuse check, find-or-train, its orbax checkpoints, and an exclusive lock.

  run = Run("runs/lenet")
  with run.lock():                                   # a second process gets WorkdirInUse at once
    cfg = run.resolve(TrainConfig(model="lenet"))   # the one reuse rule (train.find_or_train trains)
    trained = run.trained(replica=0)                 # (network, variables, dataset, config)

Layout: config.json (the resolved TrainConfig), metrics.jsonl, snapshots/epoch_*.npz, checkpoints/
(orbax), trained_variables.npz, results.json, masks.npz (lottery tickets), .lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import threading
from typing import Any, Iterator, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from redundancy_jax import models
from redundancy_jax.core import config as config_lib, parallel, storage
from redundancy_jax.core.config import TrainConfig
from redundancy_jax.core.data import Dataset
from redundancy_jax.models import Network
from redundancy_jax.core.errors import BadOption, DamagedFile, MissingFile, UserError


class ConfigMismatch(BadOption):
  """A workdir holds a run (or a result) of another configuration."""


class WorkdirInUse(UserError, RuntimeError):
  """Another process holds the workdir's lock."""


class Trained(NamedTuple):
  """A trained replica with what it needs: the module, its variables, the dataset and the config."""

  model: Network
  variables: dict
  dataset: Dataset
  config: TrainConfig


# Locks this process holds: path -> (open file, count). flock locks belong to an open file, so a second
# open of the same lock file in this process would conflict with the first; nested `lock()`s share one.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
  """An exclusive lock on `folder` (its `.lock` file, created with the folder) while inside; another
  process asking for it gets `WorkdirInUse` at once, naming the holder. The lock dies with its process,
  so a killed run's lock is taken over by the next run. In a multi-process run process 0 holds it, and
  every process checks that it sees the folder."""
  if jax.process_index() > 0:
    parallel.check_shared(folder)
    yield
    return
  path = os.path.abspath(os.path.join(folder, ".lock"))
  with _HELD_GUARD:
    if path in _HELD:
      _HELD[path][1] += 1
      held = True
    else:
      held = False
  created = False
  if not held:
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    f = open(path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      f.close()
      raise WorkdirInUse(f"workdir {folder} is in use by process {holder}; wait for it to finish, or use another "
                         f"--workdir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    with _HELD_GUARD:
      _HELD[path] = [f, 1]
  try:
    parallel.check_shared(folder)
    yield
  finally:
    with _HELD_GUARD:
      entry = _HELD[path]
      entry[1] -= 1
      if entry[1] == 0:
        del _HELD[path]
        if created and os.listdir(folder) == [".lock"]:  # a command that failed before writing anything
          os.unlink(path)
          os.rmdir(folder)
        fcntl.flock(entry[0], fcntl.LOCK_UN)
        entry[0].close()


def default_workdir(cfg: TrainConfig) -> str:
  """runs/<model> (runs/FILE_FACTORY for a user's model): where a command trains, or finds, its model when
  no --workdir is given."""
  return os.path.join("runs", run_name(cfg.model or config_lib.DEFAULTS["model"]))


def run_name(model: str) -> str:
  """A folder name for a model: its registered name, or FILE_FACTORY for path/to/FILE.py:FACTORY."""
  if not models.is_factory_spec(model):
    return model
  where, _, factory = model.rpartition(":")
  return f"{os.path.splitext(os.path.basename(where))[0].replace('.', '_')}_{factory}"


class Run:
  """The folder of one training run (K replicas trained together)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.config_path, self.results_path, self.metrics_path, self.trained_path, self.masks_path = (
      os.path.join(workdir, name) for name in
      ("config.json", "results.json", "metrics.jsonl", "trained_variables.npz", "masks.npz"))

  def __repr__(self) -> str:
    return f"Run({self.workdir!r})"

  # --- paths

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def snapshot_path(self, epoch: int) -> str:
    return self.path("snapshots", f"epoch_{epoch:05d}.npz")

  def lock(self):
    """This folder's exclusive lock (`folder_lock`)."""
    return folder_lock(self.workdir)

  # --- what it holds

  def is_trained(self) -> bool:
    return os.path.exists(self.trained_path) and os.path.exists(self.results_path)

  def config(self) -> TrainConfig:
    """The resolved training config the run recorded."""
    if not os.path.exists(self.config_path):
      raise MissingFile(f"{self.workdir} holds no training run (no config.json)")
    return TrainConfig.from_json(storage.read_json(self.config_path, self._config_fix())).resolve()

  def results(self) -> dict:
    return storage.read_json(self.results_path, self.RETRAIN_FIX)

  # What to do about a damaged file of a finished run: the last checkpoint holds the final state (with the
  # variables at minimum validation loss), so deleting the two end-of-run files only re-evaluates.
  RETRAIN_FIX = ("delete it and trained_variables.npz, then rerun the command: training resumes from the last "
                 "checkpoint (the finished run's) and only re-evaluates the test split")

  def _config_fix(self) -> str:
    return ("it records how this run was trained; restore it from results.json's \"config\" (same fields) or a "
            "copy, or train again in a new --workdir")

  def snapshot_epochs(self) -> list[int]:
    """Epochs with a parameter snapshot (0 is the initialisation)."""
    files = glob.glob(self.path("snapshots", "epoch_*.npz"))
    return sorted(int(re.search(r"epoch_(\d+)", f).group(1)) for f in files)

  def snapshot(self, epoch: int, replica: int = 0) -> dict:
    """The parameters of replica `replica` at the end of `epoch` (0 = initialisation)."""
    fix = "delete it: the analyses then use the other epochs' snapshots (retrain to get it back)"
    return self._replica(storage.load_tree(self.snapshot_path(epoch), fix), replica)

  def trained_variables(self, replica: int | None = 0) -> dict:
    """The variables at minimum validation loss ({"params", "batch_stats"?}) of replica `replica`, or of
    every replica stacked when `replica` is None."""
    if not self.is_trained():
      raise MissingFile(f"no trained model in {self.workdir}: run `python -m experiments.train "
                              f"--workdir={self.workdir} --model=...` first")
    tree = storage.load_tree(self.trained_path, self.RETRAIN_FIX.replace("it and trained_variables.npz", "it and "
                                                                           "results.json"))
    return tree if replica is None else self._replica(tree, replica)

  def trained(self, replica: int = 0, dataset: Dataset | None = None) -> Trained:
    """Replica `replica` of the trained model with its network, dataset (loaded unless given) and config."""
    from redundancy_jax.core import data as data_lib

    cfg = self.config()
    dataset = data_lib.from_config(cfg) if dataset is None else dataset
    return Trained(models.from_config(cfg, dataset), self.trained_variables(replica), dataset, cfg)

  def _replica(self, tree: dict, replica: int) -> dict:
    k = jax.tree.leaves(tree)[0].shape[0]
    if not 0 <= replica < k:
      raise BadOption(f"replica {replica} is outside 0..{k - 1}: {self.workdir} holds {k} trained replica(s)")
    return jax.tree.map(lambda a: np.asarray(a[replica]), tree)

  # --- the config checks

  def check_reuse(self, cfg: TrainConfig, dataset: Dataset | None = None) -> TrainConfig:
    """The stored config, or an error when a field set in `cfg` (the training options given) differs
    from it: a result must never be computed for, or attributed to, settings other than the model's.
    `val_size` is compared as the split the data gives for it (the bundled MNIST always holds out 1,000),
    so only once the data is known."""
    stored = self.config()
    recorded = stored.to_json()
    given = cfg.given()
    if "val_size" in given:
      given.pop("val_size") if dataset is None else given.update(val_size=len(dataset.val_y))
    diffs = {k: v for k, v in given.items() if recorded.get(k) != v}
    if diffs:
      lines = [f"  --{k}: the trained model used {recorded.get(k)!r}, the flags ask {v!r}" for k, v in diffs.items()]
      same = " ".join(f"--{k}={_flag(recorded.get(k))}" for k in diffs)
      raise ConfigMismatch(
        f"{self.workdir} holds a model trained with other settings than the flags given:\n" + "\n".join(lines) +
        f"\nEither train these settings in a new workdir (add --workdir=NEW), or analyse the model that is there: "
        f"drop these flags or pass its values ({same})."
      )
    return stored

  def started(self) -> bool:
    """Whether a run has started here: a checkpoint, a metrics line or a trained model (a config.json
    alone is left by an attempt that failed before its first epoch, and is replaced)."""
    return (self.is_trained() or os.path.exists(self.metrics_path)
            or bool(glob.glob(self.path("checkpoints", "[0-9]*"))))

  def resolve(self, cfg: TrainConfig, dataset: Dataset | None = None) -> TrainConfig:
    """The one reuse rule of every command: the config of the run started here, when every field set in
    `cfg` agrees with it (`check_reuse`; flags not given are taken from the run), or `cfg` resolved when
    none has started. Reads no data: commands validate their options with it before anything runs."""
    return self.check_reuse(cfg, dataset) if self.started() else cfg.resolve()

  # --- checkpoints (orbax) and metrics

  def checkpoints(self) -> ocp.CheckpointManager:
    """The manager of resumable training states (the two newest are kept)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(os.path.abspath(self.path("checkpoints")), options=options)

  def trim_metrics(self, last_epoch: int) -> None:
    """After resuming from `last_epoch`, drops the metric lines of epochs that are being redone."""
    if not os.path.exists(self.metrics_path):
      return
    with open(self.metrics_path) as f:
      lines = [line for line in f if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch]
    storage.atomic_write(self.metrics_path, lambda f: f.write("".join(lines).encode()))


def save_state(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves `state` at `step` and waits, so a killed run never leaves half a checkpoint as the newest."""
  mngr.save(step, args=ocp.args.StandardSave(state))
  mngr.wait_until_finished()


def restore_state(mngr: ocp.CheckpointManager, like: Any):
  """The newest state, shaped and placed like the pytree `like`; None when there is none. A checkpoint
  that cannot be read raises `DamagedFile` naming its folder and the fix (the older one is kept)."""
  step = mngr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax and tensorstore raise many kinds for a truncated or corrupted file
    folder = os.path.join(str(mngr.directory), str(step))
    older = [s for s in mngr.all_steps() if s < step]
    fix = (f"delete that folder and rerun: training resumes from the checkpoint of step {max(older)}" if older else
           "delete that folder and rerun: training starts again from the initialisation")
    raise DamagedFile(folder, fix, e) from None


def _flag(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, list) else str(value)

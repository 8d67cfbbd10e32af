"""Orbax checkpoints of the training state, and loading what a training run left in its workdir."""

from __future__ import annotations

import glob
import json
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp

from redundancy_jax import storage


def manager(workdir: str) -> ocp.CheckpointManager:
  """The workdir's manager of resumable training states (the two newest are kept)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def save_state(mngr: ocp.CheckpointManager, step: int, state) -> None:
  """Saves `state` at `step` and waits, so a killed run never leaves half a checkpoint as the newest."""
  mngr.save(step, args=ocp.args.StandardSave(state))
  mngr.wait_until_finished()


def restore_state(mngr: ocp.CheckpointManager, like):
  """Restores the newest state, shaped and placed like the pytree `like`; None when there is none."""
  step = mngr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract))


def trained_path(workdir: str) -> str:
  return os.path.join(workdir, "trained_variables.npz")


def has_trained(workdir: str) -> bool:
  return os.path.exists(trained_path(workdir)) and os.path.exists(os.path.join(workdir, "results.json"))


def _replica(tree: dict, replica: int, workdir: str) -> dict:
  """Replica `replica` (the index along the stacked K axis, 0..K-1; not the run's --seed) of `tree`."""
  k = jax.tree.leaves(tree)[0].shape[0]
  if not 0 <= replica < k:
    raise ValueError(f"replica {replica} is outside 0..{k - 1}: {workdir} holds {k} trained replica(s)")
  return jax.tree.map(lambda a: np.asarray(a[replica]), tree)


def load_trained(workdir: str, replica: int = 0) -> dict:
  """The variables at minimum validation loss of replica `replica` ({"params": ..., "batch_stats": ...})."""
  if not has_trained(workdir):
    raise FileNotFoundError(
      f"no trained model in {workdir}: run `python -m experiments.train --workdir={workdir} --model=...` first"
    )
  return _replica(storage.load_tree(trained_path(workdir)), replica, workdir)


def snapshot_path(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, "snapshots", f"epoch_{epoch:05d}.npz")


def snapshot_epochs(workdir: str) -> list[int]:
  """Epochs with a parameter snapshot (0 is the initialisation)."""
  files = glob.glob(os.path.join(workdir, "snapshots", "epoch_*.npz"))
  return sorted(int(re.search(r"epoch_(\d+)", f).group(1)) for f in files)


def load_snapshot(workdir: str, epoch: int, replica: int = 0) -> dict:
  """The parameters of replica `replica` at the end of `epoch` (0 = initialisation)."""
  return _replica(storage.load_tree(snapshot_path(workdir, epoch)), replica, workdir)


# ----------------------------------------------------------------------------- a workdir's run


class ConfigMismatch(ValueError):
  """A workdir holds a run of another configuration."""


# How a run is carried out, not what it computes: a run may resume with another value.
NOT_IDENTITY = ("num_devices",)


def check_config(workdir: str, config: dict, *, write: bool, fresh: bool = False) -> None:
  """An error listing the differences when `workdir` holds a run of another `config` (as JSON); with
  `write`, records `config` there when it holds none or is `fresh` (a config.json left by an attempt
  that failed before its first checkpoint or metrics line)."""
  path = os.path.join(workdir, "config.json")
  if fresh or not os.path.exists(path):
    if write:
      storage.write_json(path, config)
    return
  old = storage.read_json(path)
  diffs = [
    f"  {k}: workdir has {old.get(k)!r}, this run asks {v!r}"
    for k, v in config.items() if old.get(k) != v and k not in NOT_IDENTITY
  ]
  if diffs:
    raise ConfigMismatch(
      f"{workdir} holds a run with another config; use a new --workdir or the same flags:\n" + "\n".join(diffs)
    )


def trim_metrics(path: str, last_epoch: int) -> None:
  """After resuming from `last_epoch`, drops metric lines of epochs that are being redone."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l).get("epoch", 0) <= last_epoch]
  storage.atomic_write(path, lambda f: f.write("".join(lines).encode()))

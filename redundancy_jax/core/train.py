"""A whole training run in its folder: data to the devices, resume from the last checkpoint, the epochs
(`epochs.run_epoch`), and the I/O around them once per epoch: the metrics line, a parameter snapshot, a
resumable orbax checkpoint at most every `checkpoint_every_secs`, the progress line; at the end the
variables at minimum validation loss and results.json (DEFINITIONS.md section 1).

  results = train(TrainConfig(model="lenet", steps=2000, num_seeds=3), "runs/lenet")
  results = run(TrainRunConfig(train=TrainConfig(model="lenet")))       # python -m experiments.train
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.core import config, console, data as data_lib, errors, optim, parallel, storage
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax import models
from redundancy_jax.core.runs import ConfigMismatch, Run, Trained, default_workdir, restore_state, save_state
from redundancy_jax.core import steps
from redundancy_jax.core.epochs import run_epoch
from redundancy_jax.core.steps import (
  Setup, TrainState, best_variables, device_data, evaluate, init_state, make_setup,
)
from redundancy_jax.models import count_params


@dataclasses.dataclass(frozen=True)
class TrainRunConfig:
  """`python -m experiments.train`."""

  train: TrainConfig = option(TrainConfig(), "What to train.")
  workdir: str | None = option(None, "Run folder (default runs/<model>).")
  checkpoint_every_secs: float = option(60.0, "Seconds between resumable checkpoints (and one at the end).")


def run(cfg: TrainRunConfig, log: Callable[[str], None] = print) -> dict:
  """Trains (or resumes, or finds trained) the run the command describes."""
  return train(cfg.train, cfg.workdir or default_workdir(cfg.train), checkpoint_every_secs=cfg.checkpoint_every_secs,
               log=log)


def train(
  cfg: TrainConfig,
  workdir: str,
  *,
  dataset: data_lib.Dataset | None = None,
  checkpoint_every_secs: float = 60.0,
  max_epochs: int | None = None,
  log: Callable[[str], None] = print,
  progress: console.Progress | None = None,
  start: tuple[dict, dict] | None = None,
) -> dict:
  """Trains (or resumes) `cfg` in `workdir` (holding its lock); returns the results dict also written to
  results.json.

  `max_epochs` stops after that many epochs in this call (a later call resumes): for time-sliced jobs.
  SIGINT or SIGTERM ends the current epoch, saves a checkpoint and raises `console.Interrupted`. `log`
  receives event lines, `progress` (default: stdout) the run's one progress line. `start` = (params,
  masks), both stacked over the replicas, replaces the initialisation and keeps the masked weights at
  exactly zero (lottery tickets, through `optim.keep_masked`); the masks are written to masks.npz, and a
  resumed run must pass the same ones.
  """
  run = Run(workdir)
  parallel.same_everywhere(json.dumps(cfg.resolve().to_json(), sort_keys=True), "training configuration")
  with run.lock():
    planned = run.resolve(cfg)  # the run here, if the options given agree with it (else ConfigMismatch)
    dataset = data_lib.from_config(planned) if dataset is None else dataset
    resolved = dataclasses.replace(run.resolve(cfg, dataset), val_size=len(dataset.val_y))  # the real split
    results = _train(run, resolved, dataset, checkpoint_every_secs, max_epochs, log, progress, start)
  parallel.barrier("trained")  # the files process 0 wrote are there for the others
  return results


def find_or_train(run: Run, cfg: TrainConfig, log: Callable[[str], None] = print, **train_options) -> Trained:
  """Replica 0 of the model trained in `run` (the one reuse rule, `Run.resolve`), training `cfg` there first
  when it holds none; with `variables` (a path), that trained model instead (`load_variables`)."""
  variables = train_options.pop("variables", None)
  if variables is not None:
    return load_trained(cfg, variables)
  planned = run.resolve(cfg)  # an unknown name or a mismatch fails here, before anything is printed or trained
  if run.is_trained():
    log(f"reusing the {planned.model} trained in {run.workdir} on {planned.dataset} (its config.json)")
    return run.trained()
  dataset = train_options.pop("dataset", None) or data_lib.from_config(planned)  # a missing dataset fails first
  log(f"no trained model in {run.workdir}: training {planned.model} now")
  train(cfg, run.workdir, log=log, dataset=dataset, **train_options)
  return run.trained(dataset=dataset)


def load_trained(cfg: TrainConfig, path: str) -> Trained:
  """The network `cfg` describes with the trained variables in `path` (`storage.load_variables`: an orbax
  checkpoint folder, a flax.serialization msgpack file or an .npz), checked against the network's own."""
  resolved = cfg.resolve()
  dataset = data_lib.from_config(resolved)
  net = models.from_config(resolved, dataset)
  like = jax.eval_shape(lambda key: net.init(key, dataset.image_shape), jax.random.key(0))
  return Trained(net, storage.load_variables(path, like), dataset, resolved)


def provenance(run: Run, variables: str | None = None) -> dict:
  """What an analysis records about the model it used: the training run's best step, validation loss and
  test accuracy, or the variables file it loaded (with its checksum)."""
  if variables is not None:
    return {"variables": os.path.abspath(variables), "sha256": storage.checksum(variables)}
  trained = run.results()
  return {k: trained[k] for k in ("best_step", "best_val_loss", "test_accuracy")}


def _train(run: Run, cfg, dataset, checkpoint_every_secs, max_epochs, log, progress, start) -> dict:
  mngr = run.checkpoints()
  try:
    return _train_with(run, cfg, dataset, mngr, checkpoint_every_secs, max_epochs, log, progress, start)
  finally:
    mngr.close()  # its threads end here, not in an interpreter that is shutting down


def _train_with(run: Run, cfg, dataset, mngr, checkpoint_every_secs, max_epochs, log, progress, start) -> dict:
  started = run.started()
  if run.is_trained():
    log(f"{run.workdir} already holds a trained model; delete results.json to retrain")
    return run.results()
  setup = make_setup(cfg, dataset, masked=start is not None)
  if not started:  # once data and model load
    storage.write_json(run.config_path, cfg.to_json())
  train_data, val_split, test_split = device_data(setup, dataset)
  state = init_state(setup, dataset.image_shape)
  if start is not None:
    state = _start_from(setup, state, *start, run, started)
  restored = restore_state(mngr, state)
  if restored is not None:
    state = steps.place_state(restored, setup.mesh)
    run.trim_metrics(int(state.epoch))
    log(f"resuming from step {int(state.step):,} (epoch {int(state.epoch)})")
  else:
    run.trim_metrics(0)
    storage.save_tree(run.snapshot_path(0), parallel.fetch(state.params))
    log("no checkpoint: starting from scratch")
  parameters = count_params(state.params) // cfg.num_seeds
  log(
    f"training {cfg.model} ({parameters:,} parameters for {'x'.join(map(str, dataset.image_shape))} inputs) on "
    f"{dataset.source}: {cfg.steps:,} steps of {cfg.batch_size}, {setup.steps_per_epoch} steps/epoch, "
    f"{cfg.num_seeds} replica(s), {setup.mesh.size} device(s)"
  )
  with console.interruptible(log) as interrupt:
    state, rate = _epochs(setup, state, run, mngr, train_data, val_split, checkpoint_every_secs, max_epochs,
                          interrupt, progress or console.Progress())
  if state is None:
    return {"stopped_at_epoch": rate}
  test_loss, test_acc = parallel.fetch(evaluate(setup, state.best_params, state.best_batch_stats, test_split))
  storage.save_tree(run.trained_path, best_variables(state))
  results = {
    "experiment": "train",
    "config": cfg.to_json(),
    "dataset": dataset.describe(),
    "best_step": np.asarray(parallel.fetch(state.best_step)).tolist(),
    "best_val_loss": np.asarray(parallel.fetch(state.best_loss)).tolist(),
    "test_accuracy": test_acc.tolist(),
    "test_loss": test_loss.tolist(),
    "test_accuracy_mean": float(test_acc.mean()),
    "test_accuracy_std": float(test_acc.std()),
    "steps_per_second": rate,
    "devices": setup.mesh.size,
    "mesh": dict(setup.mesh.shape),
    "num_processes": jax.process_count(),
    "epochs": int(state.epoch),
    "steps_run": int(state.step),
    "parameters": parameters,
  }
  if setup.label_maps is not None:  # each replica's classes, in the order of its labels 0..C-1
    results["class_subsets"] = [np.argsort(row)[-max(row) - 1:].tolist() for row in np.asarray(setup.label_maps)]
  storage.write_json(run.results_path, results)
  log(
    f"done: test accuracy {console.numbers(100 * test_acc, '.2f', '%')} at minimum validation loss "
    f"{console.numbers(results['best_val_loss'])} (step {', '.join(f'{s:,}' for s in results['best_step'])})"
  )
  return results


def _start_from(setup: Setup, state: TrainState, params, masks, run: Run, started: bool) -> TrainState:
  """The initial state with `params` (masked) in place of the initialisation and `masks` in the
  optimizer state; records the masks in the run, or checks a resumed run's against them."""
  masks = jax.tree.map(lambda m: np.asarray(m, bool), masks)
  if started and os.path.exists(run.masks_path):
    saved = storage.load_tree(run.masks_path)
    if jax.tree.structure(saved) != jax.tree.structure(masks) or not all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(masks))):
      raise ConfigMismatch(f"{run.workdir} was started with other masks; use a new workdir")
  storage.save_tree(run.masks_path, masks)
  params = optim.apply_masks(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, masks))
  opt_state = optim.set_masks(jax.vmap(setup.tx.init)(params), masks)
  state = state.replace(params=params, opt_state=opt_state, best_params=jax.tree.map(jnp.copy, params))
  return steps.place_state(parallel.fetch(state), setup.mesh)


def _epochs(setup, state, run, mngr, train_data, val_split, checkpoint_every_secs, max_epochs, interrupt, progress):
  """The epoch loop and its I/O: metrics lines, snapshots, checkpoints, the progress line. Returns
  (state, steps/s), or (None, the next epoch) when stopped by `max_epochs`."""
  cfg, num_epochs = setup.cfg, setup.num_epochs
  snapshot_every = cfg.snapshot_every or math.ceil(num_epochs / 100)
  start_epoch, last_save = int(state.epoch), time.time()
  timed_steps, timed_secs, compile_note, rate = 0, 0.0, "", None
  due = lambda: time.time() - last_save >= checkpoint_every_secs or interrupt.requested
  pause = due if jax.process_count() == 1 else None  # processes must agree: they save at epoch ends only
  for epoch in range(start_epoch, num_epochs):
    begin = time.time()
    good_step = int(state.step)
    parts = []
    while True:  # a Python-stepped epoch pauses for a checkpoint when one is due (long CPU epochs)
      state, part, finished = run_epoch(setup, state, train_data, val_split, pause=pause)
      parts.append(parallel.fetch(part))
      if finished:
        break
      save_state(mngr, int(state.step), state if jax.process_count() > 1 else jax.device_get(state))
      last_save = time.time()
      if interrupt.requested:
        progress.update("", final=True)
        raise console.Interrupted(int(state.step))
    metrics = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    seconds = time.time() - begin
    bad_step = int(state.bad_step)
    if bad_step >= 0:
      raise errors.TrainingDiverged(
        f"non-finite training loss at iteration {bad_step}; the last good checkpoint (step "
        f"{mngr.latest_step()}) is kept in {run.path('checkpoints')}. Lower the learning rate or check the data."
      )
    active = np.asarray(metrics["active"])
    steps_done = int(active.sum())
    if epoch > start_epoch:  # the first epoch of a call includes compilation: not timed
      timed_steps, timed_secs = timed_steps + steps_done, timed_secs + seconds
    else:
      compile_note = f" | first epoch {seconds:.1f}s (compiling)"
    rate = timed_steps / timed_secs if timed_secs else steps_done / seconds
    step_now = int(state.step)
    best_loss, best_step = parallel.fetch((state.best_loss, state.best_step))
    val = np.asarray(metrics["val_loss"])[active]
    line = {
      "epoch": epoch + 1,
      "step": step_now,
      "train_loss": np.asarray(metrics["loss"])[active].mean(0).tolist(),
      "train_accuracy": np.asarray(metrics["accuracy"])[active].mean(0).tolist(),
      "val_loss": [(good_step + i + 1, v.tolist()) for i, v in enumerate(val) if not np.isnan(v).any()],
      "best_val_loss": np.asarray(best_loss).tolist(),
      "best_step": np.asarray(best_step).tolist(),
      "seconds": seconds,
    }
    storage.append_jsonl(run.metrics_path, line)
    target = cfg.target_train_loss
    last = epoch + 1 == num_epochs or (target is not None and max(line["train_loss"]) <= target)
    if (epoch + 1) % snapshot_every == 0 or last:
      storage.save_tree(run.snapshot_path(epoch + 1), parallel.fetch(state.params))
    eta = (f"ETA {console.duration((cfg.steps - step_now) / max(rate, 1e-9))}" if timed_secs
           else "ETA estimating (after the compiling epoch)")
    progress.update(
      f"step {step_now:,}/{cfg.steps:,} (epoch {epoch + 1}/{num_epochs}) | loss {np.mean(line['train_loss']):.4f}"
      f" | best val {np.mean(line['best_val_loss']):.4f} at step {int(np.max(line['best_step'])):,}"
      f" | {rate:,.0f} steps/s | {eta}{compile_note}",
      final=last,
    )
    stop = max_epochs is not None and epoch + 1 - start_epoch >= max_epochs and not last
    stopping = parallel.anyone(interrupt.requested)
    if parallel.anyone(due() or stop or last or epoch == start_epoch):  # the first epoch and every exit path save
      save_state(mngr, step_now, state if jax.process_count() > 1 else jax.device_get(state))
      last_save = time.time()
    if stopping and not last:
      progress.update("", final=True)
      raise console.Interrupted(step_now)
    if stop:
      progress.update(f"stopped after {max_epochs} epoch(s) as asked; run again to resume", final=True)
      return None, epoch + 1
    if last:  # the last epoch, or the training-loss target reached
      break
  return state, rate

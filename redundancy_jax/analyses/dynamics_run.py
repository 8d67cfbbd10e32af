"""The training dynamics of one layer as a command (report section 3.2, Figures 3-5; DEFINITIONS.md
section 3): the graph of every snapshot of a training run, laid out and drawn.

  results = run(DynamicsRunConfig(train=TrainConfig(model="lenet")))    # python -m experiments.dynamics

Uses the per-epoch snapshots of the run in the workdir (training it first when there is none). Writes
into the output folder (default <workdir>/dynamics_<layer>): frames/epoch_XXXXX.png, init_vs_converged
.png/.pdf (Figure 3; with a compared run one row per run, Figure 5), dynamics.gif (and .mp4 with
imageio-ffmpeg), dynamics.html (the interactive offline page) and dynamics.json.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np

from redundancy_jax.analyses import dynamics
from redundancy_jax.analyses.units import unit_matrix
from redundancy_jax.core import config, storage, train
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.runs import Run, default_workdir
from redundancy_jax import models
from redundancy_jax.models import topology
from redundancy_jax.core.errors import BadOption, MissingFile


@dataclasses.dataclass(frozen=True)
class DynamicsRunConfig:
  """`python -m experiments.dynamics`."""

  train: TrainConfig = option(TrainConfig(), "The training run: reused from the workdir, or trained there first.")
  workdir: str | None = option(None, "Run folder (default runs/<model>).")
  graph: dynamics.DynamicsConfig = option(dynamics.DynamicsConfig(), "What is computed per snapshot.")
  num_examples: int = option(1000, "Test images for the repeated / removable units.")
  every: int = option(1, "Use every k-th snapshot (the first and the last are always used).")
  max_frames: int | None = option(None, "Use at most this many evenly spaced snapshots (instead of --every).")
  compare_workdir: str | None = option(None, "A second training run shown side by side (same layer).")
  outdir: str | None = option(None, "Output folder (default: <workdir>/dynamics_<layer>).")
  fps: float = option(8.0, "Frames per second of the animation.")


def _no_snapshots(workdir: str, model: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"{workdir} has no parameter snapshots (snapshots/epoch_*.npz). Produce them by training into a fresh "
    f"workdir: `python -m experiments.train --model={model} --workdir=NEW` (or run this command with "
    f"--workdir=NEW, which trains first), then `python -m experiments.dynamics --workdir=NEW`"
  )


def load_snapshots(run: Run, every: int = 1, max_frames: int | None = None) -> dict:
  """{epoch: parameters of replica 0} of every `every`-th snapshot, or of at most `max_frames` evenly
  spaced ones; the first and the last always."""
  epochs = run.snapshot_epochs()
  if max_frames is not None:
    picks = np.unique(np.linspace(0, len(epochs) - 1, min(len(epochs), max_frames)).round().astype(int))
    chosen = [epochs[i] for i in picks]
  else:
    chosen = sorted(set(epochs[:: max(every, 1)]) | {epochs[-1]})
  return {e: run.snapshot(e) for e in chosen}


def analyse_run(run_: Run, cfg: DynamicsRunConfig, graph: dynamics.DynamicsConfig | None = None, log=print) -> dict:
  """`dynamics.analyse` of the chosen snapshots of a trained run, with the test images of its data, the
  unit matrices of the first and last snapshot (`weights_first`, `weights_last`) and what was analysed."""
  graph = graph or cfg.graph
  model, _, ds, training = run_.trained()
  snapshots = load_snapshots(run_, cfg.every, cfg.max_frames)
  result = dynamics.analyse(model, snapshots, graph, x=ds.test_x[: cfg.num_examples], log=log)
  first, last = min(snapshots), max(snapshots)
  result["weights_first"] = np.asarray(unit_matrix(snapshots[first], graph.layer), np.float64)
  result["weights_last"] = np.asarray(unit_matrix(snapshots[last], graph.layer), np.float64)
  result.update(workdir=run_.workdir, training=training.to_json(), dataset=ds.describe())
  return result


def run(cfg: DynamicsRunConfig, log: Callable[[str], None] = print) -> dict:
  """Finds or trains the run (and the compared run's snapshots), analyses every snapshot, writes the
  figures, the animation, the page and dynamics.json. Returns what dynamics.json holds."""
  graph = cfg.graph.check()
  if cfg.num_examples < 2 or cfg.every < 1 or cfg.fps <= 0 or (cfg.max_frames is not None and cfg.max_frames < 2):
    raise BadOption("--num_examples and --max_frames must be at least 2, --every and --fps positive")
  main = Run(cfg.workdir or default_workdir(cfg.train))
  runs = [main] + ([Run(cfg.compare_workdir)] if cfg.compare_workdir else [])
  for r in runs:  # every layer and run checked before anything is trained or written
    planned = r.resolve(cfg.train if r is main else TrainConfig())
    topology.check(models.from_config(planned), graph.layer, prunable=True, error=dynamics.DynamicsError)
    if r.is_trained() and not r.snapshot_epochs():
      raise _no_snapshots(r.workdir, planned.model)
  same = cfg.compare_workdir and os.path.abspath(cfg.compare_workdir) == os.path.abspath(main.workdir)
  if cfg.compare_workdir and not same and not runs[1].is_trained():
    raise MissingFile(f"--compare_workdir={cfg.compare_workdir} holds no trained run")
  outdir = cfg.outdir or main.path(f"dynamics_{graph.layer}")
  with main.lock():
    train.find_or_train(main, cfg.train, log)
    analysed = []
    for r in runs:
      begin = time.time()
      result = analyse_run(r, cfg, graph, log)
      log(f"{r.workdir}: {len(result['epochs'])} epochs analysed in {time.time() - begin:.1f}s")
      analysed.append((os.path.basename(os.path.normpath(r.workdir)), result))
      graph = dataclasses.replace(graph, threshold=result["threshold"])  # the compared run: the same threshold
    return write_outputs(outdir, analysed, cfg.fps, log)


def write_outputs(outdir: str, analysed: list, fps: float, log=print) -> dict:
  """dynamics.json, the frames and animation, Figure 3 (or 5) and the page, into `outdir`."""
  from redundancy_jax.plots import dynamics as plots  # matplotlib: only where figures are drawn

  begin = time.time()
  saved = {"experiment": "dynamics", "runs": [
    storage.jsonable({"label": label, **{k: v for k, v in result.items() if not k.startswith("weights_")}}, 4)
    for label, result in analysed]}
  storage.write_json(os.path.join(outdir, "dynamics.json"), saved)
  written = plots.render_frames(analysed, outdir, fps=fps)
  written["figure"] = plots.save_init_vs_converged(analysed, os.path.join(outdir, "init_vs_converged.png"))
  written["page"] = [plots.write_page(os.path.join(outdir, "dynamics.html"), analysed)]
  log(f"figures written in {time.time() - begin:.1f}s:")
  for name, paths in written.items():
    log(f"  {name}: {paths[0]}" + (f" .. {paths[-1]} ({len(paths)} files)" if len(paths) > 1 else ""))
  log(f"  json: {os.path.join(outdir, 'dynamics.json')}")
  return saved

"""Width and distance to initialisation (Neyshabur et al. 2019; DEFINITIONS.md section 5).

  results = run(WidthConfig())                 # python -m experiments.width

One-hidden-layer ReLU networks (model `mlp`, SGD 0.01, momentum 0.9, batch 64) of each width h, trained
(the seeds as vmapped replicas, in <workdir>/h<h>; a finished width is reused, an interrupted one
resumes) until the epoch-mean training loss reaches `target_loss`, at most `max_steps`. At that point,
per width and seed: test error, the distances ||u_i - u_i^0|| of the hidden units from their
initialisation and ||U - U0||_F, the fraction of units removable at 1 point of test accuracy by max_mag
and by max_fp (no retraining), and the elbow k of U's residual curve. Headline: the per-unit distance
to initialisation falls as h grows while the test error keeps falling.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np
from scipy import stats

from redundancy_jax.analyses import spectral
from redundancy_jax.analyses.prune_sweep import compare_criteria, removable_fraction
from redundancy_jax.analyses.units import unit_matrix
from redundancy_jax import models
from redundancy_jax.core import config, data as data_lib, storage, train, variants
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.runs import Run, folder_lock
from redundancy_jax.core.verdicts import RULE_ONLY, Verdict
from redundancy_jax.core.errors import BadOption

FALLS = -0.6  # "falls as h grows": Spearman correlation with h at most this, and the widest below the narrowest
MAX_LEVELS = 257  # removal levels swept per layer (every level up to 256 units)
DATASETS = ("mnist", "fashion_mnist")


@dataclasses.dataclass(frozen=True)
class WidthConfig:
  """`python -m experiments.width`; `--quick`: bundled MNIST, widths 8..512, loss target 0.1, 2 seeds."""

  widths: tuple[int, ...] = option(tuple(2**i for i in range(3, 14)), "Hidden widths h.", quick=(8, 32, 128, 512))
  dataset: str = option("fashion_mnist", "Real images to train on.", choices=DATASETS, quick="mnist")
  data_dir: str | None = option(None, "Folder with the dataset's IDX files (default: the usual search).")
  target_loss: float = option(0.01, "Training-loss target (epoch mean of every seed).", quick=0.1)
  max_steps: int = option(100_000, "Step cap when the target is not reached.", quick=3000)
  num_seeds: int = option(3, "Seeds per width (vmapped replicas).", quick=2)
  accuracy_loss: float = option(0.01, "Accuracy loss (fraction) at which units count as removable.")
  workdir: str = option("runs/width", "Output folder (one training run per width inside).")

  def check(self) -> "WidthConfig":
    config.check_choices(self)
    if not self.widths or min(self.widths) < 2 or self.num_seeds < 1 or self.max_steps < 1 or self.target_loss <= 0:
      raise BadOption("widths must be at least 2; --num_seeds, --max_steps and --target_loss positive")
    return dataclasses.replace(self, widths=tuple(sorted(set(self.widths))))

  def training(self, h: int) -> TrainConfig:
    return TrainConfig(model="mlp", width=float(h), dataset=self.dataset, data_dir=self.data_dir, steps=self.max_steps,
                       target_train_loss=self.target_loss, num_seeds=self.num_seeds)


def width_row(cfg: WidthConfig, h: int, log=print) -> dict:
  """Trains (or reuses) width h and measures every seed at the end of training."""
  tc = cfg.training(h).resolve()
  run_ = Run(os.path.join(cfg.workdir, f"h{h}"))
  ds = data_lib.from_config(tc)
  results = train.train(tc, run_.workdir, dataset=ds, log=log)
  model = models.from_config(tc, ds)
  last = run_.snapshot_epochs()[-1]
  seeds = []
  for r in range(tc.num_seeds):
    params = run_.snapshot(last, replica=r)
    U, U0 = (np.asarray(unit_matrix(p, "fc1"), np.float64) for p in (params, run_.snapshot(0, replica=r)))
    variables = {"params": params}
    _, accuracy = variants.loss_and_accuracy(model, variables, ds.test_x, ds.test_y)
    levels = np.unique(np.linspace(0, h, min(h + 1, MAX_LEVELS)).round().astype(int))
    sweep = compare_criteria(model, variables, "fc1", ds.test_x, ds.test_y, criteria=("max_mag", "max_fp"),
                             levels=levels)
    distance = np.linalg.norm(U - U0, axis=1)
    seeds.append({
      "test_error": 1 - accuracy, "distance_mean": float(distance.mean()), "distance_median": float(np.median(distance)),
      "distance_quantiles": np.quantile(distance, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist(),
      "frobenius": float(np.linalg.norm(U - U0)), "relative_frobenius": float(np.linalg.norm(U - U0) / np.linalg.norm(U0)),
      **{f"removable_{c}": removable_fraction(levels, sweep["criteria"][c]["accuracy"], sweep["base_accuracy"],
                                              cfg.accuracy_loss) for c in ("max_mag", "max_fp")},
      "elbow": int(spectral.elbow(spectral.residuals(U))),
    })
  row = {"width": h, "steps_run": results.get("steps_run"), "epochs": results.get("epochs"),
         "train_loss_reached": results.get("steps_run", cfg.max_steps) < cfg.max_steps, "seeds": seeds}
  for key in seeds[0]:
    if key != "distance_quantiles":
      values = [s[key] for s in seeds]
      row[f"{key}_mean"], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
  log(f"h={h}: test error {100 * row['test_error_mean']:.2f}%, per-unit distance {row['distance_mean_mean']:.3f}, "
      f"||U - U0|| {row['frobenius_mean']:.2f}, removable at {100 * cfg.accuracy_loss:g} point: max_mag "
      f"{100 * row['removable_max_mag_mean']:.0f}%, max_fp {100 * row['removable_max_fp_mean']:.0f}%, elbow k "
      f"{row['elbow_mean']:.1f}, {row['steps_run']} steps")
  return row


def headline(rows: list[dict]) -> Verdict:
  widths = [r["width"] for r in rows]
  distance = [r["distance_mean_mean"] for r in rows]
  error = [r["test_error_mean"] for r in rows]
  rho_d = float(stats.spearmanr(widths, distance)[0]) if len(rows) > 2 else float("nan")
  rho_e = float(stats.spearmanr(widths, error)[0]) if len(rows) > 2 else float("nan")
  claim = "the per-unit distance to initialisation falls as the width grows while the test error keeps falling"
  rule = f"Spearman correlation with h <= {FALLS} for both, and the widest below the narrowest"
  numbers = {"spearman_distance": rho_d, "spearman_test_error": rho_e, "distance": distance, "test_error": error}
  if len(rows) < 3:
    return Verdict.untestable(claim, "fewer than 3 widths", rule=rule, numbers=numbers)
  ok = rho_d <= FALLS and rho_e <= FALLS and distance[-1] < distance[0] and error[-1] < error[0]
  evidence = (f"h = {widths[0]} -> {widths[-1]}: per-unit distance {distance[0]:.2f} -> {distance[-1]:.2f} (Spearman "
              f"{rho_d:.2f}), test error {100 * error[0]:.2f} -> {100 * error[-1]:.2f}% (Spearman {rho_e:.2f})")
  return Verdict.decide(claim, ok, evidence, rule=rule, numbers=numbers, effect=distance[0] - distance[-1],
                        control_spread=max(r["distance_mean_std"] for r in rows), unit="per-unit distance",
                        test=RULE_ONLY, measured_on=f"h = {widths[0]} minus h = {widths[-1]}, means over seeds; "
                                                    "control: the largest spread over seeds of one width")


def run(cfg: WidthConfig, log: Callable[[str], None] = print) -> dict:
  """Every width in turn; writes results.json and figure.png/.pdf."""
  cfg = cfg.check()
  rows = []
  with folder_lock(cfg.workdir):
    for h in cfg.widths:
      begin = time.time()
      rows.append(width_row(cfg, h, log))
      rows[-1]["seconds"] = time.time() - begin
    verdict = headline(rows)
    results = {"experiment": "width", "config": config.to_json(cfg), "rows": rows, "headlines": [verdict.to_json()],
               "settings": f"one hidden layer on {cfg.dataset}, h = {', '.join(map(str, cfg.widths))}, loss "
                           f"{cfg.target_loss:g}, cap {cfg.max_steps:,} steps, {cfg.num_seeds} seeds"}
    storage.write_json(os.path.join(cfg.workdir, "results.json"), results)
    from redundancy_jax.plots import save, width as plots  # matplotlib: only where a figure is drawn

    paths = save(plots.figure(results), os.path.join(cfg.workdir, "figure"))
  n = verdict.numbers
  log(f"headline: {verdict.claim}: {verdict.verdict.upper()} (Spearman: distance {n['spearman_distance']:.2f}, "
      f"test error {n['spearman_test_error']:.2f})")
  log(f"wrote {cfg.workdir}/results.json, {', '.join(os.path.basename(p) for p in paths)}")
  return results

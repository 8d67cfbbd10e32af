"""Width and distance to initialisation (Neyshabur et al. 2019; report section 2, SPEC section 5).

  python -m experiments.width [--quick] [--widths=8,16,...,8192] [--dataset=fashion_mnist] \
      [--target_loss=0.01] [--max_steps=100000] [--num_seeds=3] [--workdir=runs/width]

One-hidden-layer ReLU networks (`--model=mlp`, SGD 0.01, momentum 0.9, batch 64) of each width h,
trained (the seeds as vmapped replicas, in <workdir>/h<h>; a finished width is reused, an interrupted
one resumes) until the epoch-mean training loss reaches --target_loss, at most --max_steps. At that
point, per width and seed: test error, the distances ||u_i - u_i^0|| of the hidden units from their
initialisation and ||U - U0||_F, the fraction of units removable at 1 point of test accuracy by max_mag
and by max_fp (no retraining; `pruning.compare_criteria`), and the elbow k of U's residual curve.
Writes results.json and figure.png/.pdf; headline tested: the per-unit distance to initialisation falls
as h grows while the test error keeps falling.
"""

import os
import time

import numpy as np
from absl import flags
from scipy import stats

from experiments import app
from redundancy_jax import checkpoint, config, pruning, spectral, storage, train, variants
from redundancy_jax.plots import spectral as spectral_plots
from redundancy_jax.plots import width as plots

flags.DEFINE_bool("quick", False, "Bundled MNIST, widths 8..512, loss target 0.1, 2 seeds: about a minute on 2 cores.")
flags.DEFINE_list("widths", [str(2**i) for i in range(3, 14)], "Hidden widths h.")
flags.DEFINE_string("dataset", "fashion_mnist", "mnist or fashion_mnist (real images).")
flags.DEFINE_string("data_dir", None, "Folder with the dataset's IDX files (default: the usual search).")
flags.DEFINE_float("target_loss", 0.01, "Training-loss target (epoch mean of every seed).")
flags.DEFINE_integer("max_steps", 100_000, "Step cap when the target is not reached.")
flags.DEFINE_integer("num_seeds", 3, "Seeds per width (vmapped replicas).")
flags.DEFINE_float("accuracy_loss", 0.01, "Accuracy loss (fraction) at which units count as removable.")
flags.DEFINE_string("workdir", "runs/width", "Output folder (one training run per width inside).")
FLAGS = flags.FLAGS

QUICK = {"dataset": "mnist", "widths": ["8", "32", "128", "512"], "target_loss": 0.1, "max_steps": 3000,
         "num_seeds": 2}
FALLS = -0.6  # "falls as h grows": Spearman correlation with h at most this, and the widest below the narrowest
MAX_LEVELS = 257  # removal levels swept per layer (every level up to 256 units)


def settings() -> dict:
  values = app.flag_values(("dataset", "widths", "target_loss", "max_steps", "num_seeds"), FLAGS.quick and QUICK)
  if values["dataset"] not in ("mnist", "fashion_mnist"):
    raise ValueError(f"--dataset={values['dataset']}: the width study runs on real images; valid: mnist, fashion_mnist")
  try:
    widths = sorted({int(w) for w in values["widths"]})
  except ValueError:
    raise ValueError(f"--widths takes integers, got {values['widths']}") from None
  if widths[0] < 2 or values["num_seeds"] < 1 or values["max_steps"] < 1 or values["target_loss"] <= 0:
    raise ValueError("widths must be at least 2; --num_seeds, --max_steps and --target_loss positive")
  return {**values, "widths": widths, "accuracy_loss": FLAGS.accuracy_loss, "data_dir": FLAGS.data_dir,
          "quick": FLAGS.quick}


def width_row(cfg: dict, h: int, log=print) -> dict:
  """Trains (or reuses) width h and measures every seed at the end of training."""
  tc = train.TrainConfig(model="mlp", width=float(h), dataset=cfg["dataset"], data_dir=cfg["data_dir"],
                         steps=cfg["max_steps"], target_train_loss=cfg["target_loss"], num_seeds=cfg["num_seeds"])
  workdir = os.path.join(FLAGS.workdir, f"h{h}")
  ds = config.load_data(tc.resolve())
  results = train.train(tc, workdir, dataset=ds, log=log)
  model = train.make_setup(tc.resolve(), ds).model
  last = checkpoint.snapshot_epochs(workdir)[-1]
  seeds = []
  for r in range(tc.num_seeds):
    params = checkpoint.load_snapshot(workdir, last, replica=r)
    U, U0 = (np.asarray(pruning.unit_matrix(p, "fc1"), np.float64)
             for p in (params, checkpoint.load_snapshot(workdir, 0, replica=r)))
    variables = {"params": params}
    _, accuracy = variants.loss_and_accuracy(model, variables, ds.test_x, ds.test_y)
    levels = np.unique(np.linspace(0, h, min(h + 1, MAX_LEVELS)).round().astype(int))
    sweep = pruning.compare_criteria(model, variables, "fc1", ds.test_x, ds.test_y, criteria=("max_mag", "max_fp"),
                                     levels=levels)
    distance = np.linalg.norm(U - U0, axis=1)
    seeds.append({
      "test_error": 1 - accuracy, "distance_mean": float(distance.mean()), "distance_median": float(np.median(distance)),
      "distance_quantiles": np.quantile(distance, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist(),
      "frobenius": float(np.linalg.norm(U - U0)), "relative_frobenius": float(np.linalg.norm(U - U0) / np.linalg.norm(U0)),
      **{f"removable_{c}": pruning.removable_fraction(levels, sweep["criteria"][c]["accuracy"], sweep["base_accuracy"],
                                              cfg["accuracy_loss"]) for c in ("max_mag", "max_fp")},
      "elbow": int(spectral.elbow(spectral.residuals(U))),
    })
  row = {"width": h, "steps_run": results.get("steps_run"), "epochs": results.get("epochs"),
         "train_loss_reached": results.get("steps_run", cfg["max_steps"]) < cfg["max_steps"], "seeds": seeds}
  for key in seeds[0]:
    if key != "distance_quantiles":
      values = [s[key] for s in seeds]
      row[f"{key}_mean"], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
  log(f"h={h}: test error {100 * row['test_error_mean']:.2f}%, per-unit distance {row['distance_mean_mean']:.3f}, "
      f"||U - U0|| {row['frobenius_mean']:.2f}, removable at {100 * cfg['accuracy_loss']:g} point: max_mag "
      f"{100 * row['removable_max_mag_mean']:.0f}%, max_fp {100 * row['removable_max_fp_mean']:.0f}%, elbow k "
      f"{row['elbow_mean']:.1f}, {row['steps_run']} steps")
  return row


def headline(rows: list[dict]) -> dict:
  widths = [r["width"] for r in rows]
  distance = [r["distance_mean_mean"] for r in rows]
  error = [r["test_error_mean"] for r in rows]
  rho_d = float(stats.spearmanr(widths, distance)[0]) if len(rows) > 2 else float("nan")
  rho_e = float(stats.spearmanr(widths, error)[0]) if len(rows) > 2 else float("nan")
  ok = rho_d <= FALLS and rho_e <= FALLS and distance[-1] < distance[0] and error[-1] < error[0]
  return {"claim": "the per-unit distance to initialisation falls as the width grows while the test error keeps falling",
          "verdict": "holds" if ok else ("not testable (fewer than 3 widths)" if len(rows) < 3 else "does not hold"),
          "spearman_distance": rho_d, "spearman_test_error": rho_e, "distance": distance, "test_error": error,
          "rule": f"Spearman correlation with h <= {FALLS} for both, and the widest below the narrowest"}


def run() -> None:
  cfg = settings()
  rows = []
  for h in cfg["widths"]:
    begin = time.time()
    rows.append(width_row(cfg, h))
    rows[-1]["seconds"] = time.time() - begin
  results = {"config": cfg, "rows": rows, "headline": headline(rows)}
  storage.write_json(os.path.join(FLAGS.workdir, "results.json"), results)
  paths = spectral_plots.save(plots.figure(results), os.path.join(FLAGS.workdir, "figure"))
  h = results["headline"]
  print(f"headline: {h['claim']}: {h['verdict'].upper()} (Spearman: distance {h['spearman_distance']:.2f}, "
        f"test error {h['spearman_test_error']:.2f})")
  print(f"wrote {FLAGS.workdir}/results.json, {', '.join(os.path.basename(p) for p in paths)}")


if __name__ == "__main__":
  app.run_app(run)

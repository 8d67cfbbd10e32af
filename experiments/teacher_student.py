"""Teacher-student soft committee machines (Goldt et al. 2019; report section 2, SPEC section 5).

  python -m experiments.teacher_student [--quick] [--student_units=2,3,4,6,8,10] [--noise=0.5] \
      [--input_dim=500] [--time=100] [--num_seeds=3] [--workdir=runs/teacher_student]

A teacher of M units (w* entries N(0, 1), v* = 1, g(z) = erf(z / sqrt 2)) labels fresh Gaussian inputs
with output noise sigma; students of K >= M units learn by online SGD for alpha = steps / N units of
time, training their first layer only (the soft committee machine, v = 1) or both layers. Every K and
seed of a mode is one vmapped program; the generalisation error is the exact closed form. Writes
results.json (config, curves, final errors, overlaps, the headline's verdict) and figure.png/.pdf.
Headline tested: with output noise, the final error grows with K when only the first layer is trained,
and stays flat or falls with K when both layers are trained.
"""

import os
import time

import jax
import numpy as np
from absl import flags

from experiments import app
from redundancy_jax import storage
from redundancy_jax import teacher_student as ts
from redundancy_jax.plots import spectral as spectral_plots
from redundancy_jax.plots import teacher_student as plots

flags.DEFINE_bool("quick", False, "N = 100, alpha = 100, K in 2, 4, 8: under a minute on 2 CPU cores.")
flags.DEFINE_integer("input_dim", 500, "Input dimension N.")
flags.DEFINE_integer("teacher_units", 2, "Teacher hidden units M.")
flags.DEFINE_list("student_units", ["2", "3", "4", "6", "8", "10"], "Student widths K (each >= M).")
flags.DEFINE_float("noise", 0.5, "Output noise sigma of the teacher's labels.")
flags.DEFINE_float("lr", 0.5, "Learning rate eta (eta / sqrt N first layer, eta / N second).")
flags.DEFINE_float("time", 100.0, "Training time alpha = steps / N.")
flags.DEFINE_integer("records", 60, "Error records along the run.")
flags.DEFINE_integer("num_seeds", 3, "Seeds per student width.")
flags.DEFINE_integer("seed", 0, "Seed of the teacher and the students.")
flags.DEFINE_string("workdir", "runs/teacher_student", "Output folder.")
FLAGS = flags.FLAGS

QUICK = {"input_dim": 100, "time": 100.0, "student_units": ["2", "4", "8"], "records": 40}
GROWS, FLAT = 1.5, 1.1  # "grows": eps(K_max) > 1.5 eps(K_min) and non-decreasing; "flat or falls": <= 1.1 eps(K_min)


def settings() -> dict:
  values = app.flag_values(("input_dim", "time", "student_units", "records"), FLAGS.quick and QUICK)
  try:
    ks = sorted({int(k) for k in values["student_units"]})
  except ValueError:
    raise ValueError(f"--student_units takes integers, got {values['student_units']}") from None
  M = FLAGS.teacher_units
  if M < 1 or not ks or ks[0] < M:
    raise ValueError(f"every student needs K >= M = {M} units (got --student_units={','.join(map(str, ks))})")
  steps = int(round(values["time"] * values["input_dim"]))
  record_every = max(1, steps // values["records"])
  steps = record_every * (steps // record_every)
  if steps < 1 or FLAGS.num_seeds < 1 or FLAGS.noise < 0 or FLAGS.lr <= 0:
    raise ValueError("--time, --num_seeds and --lr must be positive and --noise non-negative")
  return {"input_dim": values["input_dim"], "teacher_units": M, "student_units": ks, "noise": FLAGS.noise,
          "lr": FLAGS.lr, "steps": steps, "record_every": record_every, "time": steps / values["input_dim"],
          "num_seeds": FLAGS.num_seeds, "seed": FLAGS.seed, "quick": FLAGS.quick}


def headline(modes: dict) -> dict:
  first, both = modes["first_layer"]["final_mean"], modes["both_layers"]["final_mean"]
  grows = first[-1] > GROWS * first[0] and all(b >= a for a, b in zip(first, first[1:]))
  flat = both[-1] <= FLAT * both[0]
  return {
    "claim": "with output noise, the final error grows with K when only the first layer is trained, and stays "
             "flat or falls with K when both layers are trained",
    "verdict": "holds" if grows and flat else "does not hold",
    "first_layer_final": first, "both_layers_final": both,
    "rule": f"grows: eps(K_max) > {GROWS} eps(K_min) and non-decreasing in K; flat or falls: eps(K_max) <= {FLAT} eps(K_min)",
  }


def run() -> None:
  cfg = settings()
  key = jax.random.key(cfg["seed"])
  Ws, vs = ts.teacher(jax.random.fold_in(key, 0), cfg["teacher_units"], cfg["input_dim"])
  results = {"config": cfg, "modes": {}}
  for i, mode in enumerate(("first_layer", "both_layers")):
    begin = time.time()
    out = ts.train_students(
      jax.random.fold_in(key, i + 1), Ws, vs, cfg["student_units"], seeds=cfg["num_seeds"], steps=cfg["steps"],
      lr=cfg["lr"], noise=cfg["noise"], train_second=mode == "both_layers", record_every=cfg["record_every"],
    )
    errors = out["errors"]  # (K, seeds, records)
    final = errors[:, :, -1]
    W, v, mask = out["W"][-1, 0], out["v"][-1, 0], out["mask"][-1]  # widest student, seed 0
    Q, R, T = (np.asarray(a, np.float64) for a in ts.order_parameters(W, Ws))
    cosine = R / np.sqrt(np.outer(np.diag(Q), np.diag(T)))
    match = ts.match_units(cosine, v, mask)
    results["time"] = out["time"]
    results["modes"][mode] = {
      "ks": cfg["student_units"], "final_mean": final.mean(1).tolist(), "final_std": final.std(1).tolist(),
      "final": final.tolist(), "curve_mean": errors.mean(1).tolist(), "curve_std": errors.std(1).tolist(),
      "overlap": {"K": cfg["student_units"][-1], "order": match["order"], "teacher": match["teacher"],
                  "cosine": cosine[match["order"]].tolist(), "v": v[match["order"]].tolist()},
      "seconds": time.time() - begin,
    }
    print(f"{mode}: final eps_g " + ", ".join(
      f"K={k} {m:.4f} +- {s:.4f}" for k, m, s in zip(cfg["student_units"], final.mean(1), final.std(1)))
      + f" ({results['modes'][mode]['seconds']:.1f}s)")
  results["headline"] = headline(results["modes"])
  storage.write_json(os.path.join(FLAGS.workdir, "results.json"), results)
  paths = spectral_plots.save(plots.figure(results), os.path.join(FLAGS.workdir, "figure"))
  print(f"headline: {results['headline']['claim']}: {results['headline']['verdict'].upper()}")
  print(f"wrote {FLAGS.workdir}/results.json, {', '.join(os.path.basename(p) for p in paths)}")


if __name__ == "__main__":
  app.run_app(run)

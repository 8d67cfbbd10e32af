"""Filter clustering and XORD (Brutzkus and Globerson 2019; report section 2, SPEC section 5).

  python -m experiments.clustering [--quick] [--ks=2,4,8,16,32,64,120] [--pairs=4] [--n_train=40] \
      [--clusters=4] [--num_seeds=5] [--conv2_workdir=runs/report/runs/conv2] [--workdir=runs/clustering]

1. XORD networks (2k filters of size 2, stride 2, ReLU, max-pool, fixed +-1 readout, hinge loss, SGD)
   for every k, all seeds of all k in one vmapped program, trained on --n_train points of the balanced
   XORD distribution; test accuracy is exact, over all 2^(2d) points weighted by that distribution.
2. k-means (--clusters centres) on the normalised filters: each filter's angle to its nearest centre,
   trained against initialisation; compression: each filter replaced by its centre scaled to its norm,
   accuracy per number of centres.
3. The same for the first conv layer of a trained Conv-2 on real images (the run in --conv2_workdir, or
   one trained there first with --conv2_steps at --conv2_width on --conv2_dataset).
Writes results.json and figure.png/.pdf. Headlines tested: the larger network generalises better
(test accuracy rises with k), and trained filters cluster (median angle to the nearest centre falls
from initialisation).
"""

import os
import time

import jax
import numpy as np
from absl import flags
from scipy import stats

from experiments import app
from redundancy_jax import checkpoint, clustering, config, data, pruning, spectral, storage, train, variants
from redundancy_jax.plots import clustering as plots
from redundancy_jax.plots import spectral as spectral_plots

flags.DEFINE_bool("quick", False, "k up to 32, 3 seeds, 2,000 steps, a small Conv-2: under a minute on 2 cores.")
flags.DEFINE_list("ks", ["2", "4", "8", "16", "32", "64", "120"], "Filters per sign k (the network has 2k).")
flags.DEFINE_integer("pairs", 4, "XORD dimension d (inputs of 2d values).")
flags.DEFINE_integer("n_train", 40, "XORD training points.")
flags.DEFINE_integer("steps", 10_000, "SGD steps.")
flags.DEFINE_integer("batch", 10, "SGD batch size.")
flags.DEFINE_float("lr", 0.05, "SGD learning rate.")
flags.DEFINE_integer("num_seeds", 5, "Seeds per k.")
flags.DEFINE_integer("clusters", 4, "k-means centres for the angle statistic.")
flags.DEFINE_list("centres", ["1", "2", "4", "8", "16", "32"], "Numbers of centres in the compression check.")
flags.DEFINE_string("conv2_workdir", "runs/clustering/conv2", "Trained Conv-2 (trained there first if absent).")
flags.DEFINE_string("conv2_dataset", "fashion_mnist", "Data of a Conv-2 trained by this script.")
flags.DEFINE_integer("conv2_steps", 2000, "Steps of a Conv-2 trained by this script.")
flags.DEFINE_float("conv2_width", 1.0, "Width of a Conv-2 trained by this script.")
flags.DEFINE_integer("seed", 0, "Seed of the data, the networks and k-means.")
flags.DEFINE_string("workdir", "runs/clustering", "Output folder.")
FLAGS = flags.FLAGS

QUICK = {"ks": ["2", "8", "32"], "num_seeds": 3, "steps": 2000, "conv2_steps": 300, "conv2_width": 0.25}
RISES = 0.6  # "generalises better with k": Spearman correlation of test accuracy with k at least this


def settings() -> dict:
  values = app.flag_values(("ks", "num_seeds", "steps", "conv2_steps", "conv2_width"), FLAGS.quick and QUICK)
  try:
    ks = sorted({int(k) for k in values["ks"]})
    centres = sorted({int(c) for c in FLAGS.centres})
  except ValueError:
    raise ValueError(f"--ks and --centres take integers, got {values['ks']} and {FLAGS.centres}") from None
  if ks[0] < 1 or centres[0] < 1 or FLAGS.clusters < 1 or FLAGS.pairs < 1 or FLAGS.n_train < 2:
    raise ValueError("--ks, --centres, --clusters and --pairs must be positive and --n_train at least 2")
  return {**values, "ks": ks, "centres": centres, "pairs": FLAGS.pairs, "n_train": FLAGS.n_train,
          "batch": min(FLAGS.batch, FLAGS.n_train), "lr": FLAGS.lr, "clusters": FLAGS.clusters, "seed": FLAGS.seed,
          "quick": FLAGS.quick}


def _angles(filters_by_seed, clusters, seed) -> np.ndarray:
  return np.concatenate([clustering.nearest_centre_angles(F, clusters, seed=seed)[0] for F in filters_by_seed])


def _summary(angles) -> dict:
  a = np.asarray(angles)[~np.isnan(angles)]
  return {"median": float(np.median(a)), "mean": float(a.mean()), "quantiles": np.quantile(a, [0.1, 0.25, 0.75, 0.9]).tolist(),
          "histogram": np.histogram(a, bins=18, range=(0, 90))[0].tolist()}


def xord_part(cfg: dict, log=print) -> dict:
  ds = data.xord(cfg["seed"], pairs=cfg["pairs"], n_train=cfg["n_train"], n_val=0, n_test=0)
  x_train, y_train = ds.train_x.reshape(len(ds.train_y), -1), 2 * ds.train_y - 1
  x_all, y_all, weight = clustering.xord_enumeration(cfg["pairs"])
  begin = time.time()
  out = clustering.train_xord(jax.random.key(cfg["seed"]), cfg["ks"], x_train, y_train, seeds=cfg["num_seeds"],
                              steps=cfg["steps"], lr=cfg["lr"], batch=cfg["batch"])
  seconds = time.time() - begin
  rows = []
  for i, k in enumerate(cfg["ks"]):
    mask = out["mask"][i]
    active = mask > 0
    test = [clustering.accuracy(out["W"][i, s], mask, x_all, y_all, weight) for s in range(cfg["num_seeds"])]
    train_acc = [clustering.accuracy(out["W"][i, s], mask, x_train, y_train) for s in range(cfg["num_seeds"])]
    trained = [out["W"][i, s][active] for s in range(cfg["num_seeds"])]
    initial = [out["W0"][i, s][active] for s in range(cfg["num_seeds"])]
    row = {"k": k, "test_accuracy": test, "test_mean": float(np.mean(test)), "test_std": float(np.std(test)),
           "train_mean": float(np.mean(train_acc)),
           "angles_trained": _summary(_angles(trained, cfg["clusters"], cfg["seed"])),
           "angles_init": _summary(_angles(initial, cfg["clusters"], cfg["seed"]))}
    compressed = []  # seed 0: accuracy with each filter replaced by its centre, per number of centres
    for c in cfg["centres"]:
      _, labels, centres = clustering.nearest_centre_angles(trained[0], c, seed=cfg["seed"])
      W = out["W"][i, 0].copy()
      W[active] = clustering.compress(trained[0], labels, centres)
      compressed.append(clustering.accuracy(W, mask, x_all, y_all, weight))
    row["compressed_accuracy"] = compressed
    rows.append(row)
    log(f"XORD k={k}: test accuracy {100 * row['test_mean']:.1f} +- {100 * row['test_std']:.1f}% (train "
        f"{100 * row['train_mean']:.1f}%), median angle to the nearest of {cfg['clusters']} centres "
        f"{row['angles_init']['median']:.1f} -> {row['angles_trained']['median']:.1f} deg")
  return {"rows": rows, "seconds": seconds, "dataset": ds.describe()}


def conv2_part(cfg: dict, log=print) -> dict:
  """Clustering of Conv-2's first conv layer, trained on real images (replica 0)."""
  workdir = FLAGS.conv2_workdir
  if not checkpoint.has_trained(workdir):
    tc = train.TrainConfig(model="conv2", dataset=FLAGS.conv2_dataset, steps=cfg["conv2_steps"],
                           width=cfg["conv2_width"])
    log(f"no trained Conv-2 in {workdir}: training one ({cfg['conv2_steps']} steps, width {cfg['conv2_width']:g})")
    train.train(tc, workdir, log=log)
  tc = train.TrainConfig.from_json(storage.read_json(os.path.join(workdir, "config.json"))).resolve()
  ds = config.load_data(tc)
  model = train.make_setup(tc, ds).model
  variables = checkpoint.load_trained(workdir)
  W = np.asarray(pruning.unit_matrix(variables, "conv1"), np.float64)
  W0 = np.asarray(pruning.unit_matrix(checkpoint.load_snapshot(workdir, 0), "conv1"), np.float64)
  x, y = ds.test_x, ds.test_y
  base = variants.loss_and_accuracy(model, variables, x, y)[1]
  compressed = []
  for c in cfg["centres"]:
    _, labels, centres = clustering.nearest_centre_angles(W, c, seed=cfg["seed"])
    kernel = spectral.kernel_from_units(
      clustering.compress(W, labels, centres).astype(np.float32), variables["params"]["conv1"]["kernel"].shape)
    params = {**variables["params"], "conv1": {**variables["params"]["conv1"], "kernel": kernel}}
    compressed.append(variants.loss_and_accuracy(model, {**variables, "params": params}, x, y)[1])
  result = {"workdir": workdir, "training": tc.to_json(), "dataset": ds.describe(), "filters": int(len(W)),
            "accuracy": base, "compressed_accuracy": compressed,
            "angles_trained": _summary(clustering.nearest_centre_angles(W, cfg["clusters"], seed=cfg["seed"])[0]),
            "angles_init": _summary(clustering.nearest_centre_angles(W0, cfg["clusters"], seed=cfg["seed"])[0])}
  log(f"Conv-2 conv1 ({len(W)} filters, {data.label(result['dataset'])}): median angle to the nearest of "
      f"{cfg['clusters']} centres {result['angles_init']['median']:.1f} -> {result['angles_trained']['median']:.1f} "
      f"deg; accuracy {100 * base:.2f}%, with {cfg['centres'][-1]} centres {100 * compressed[-1]:.2f}%")
  return result


def headlines(xord: dict, conv2: dict) -> list[dict]:
  ks = [r["k"] for r in xord["rows"]]
  test = [r["test_mean"] for r in xord["rows"]]
  rho = float(stats.spearmanr(ks, test)[0]) if len(ks) > 2 else float("nan")
  better = rho >= RISES and test[-1] > test[0]
  widest = xord["rows"][-1]
  cluster = {name: (r["angles_init"]["median"], r["angles_trained"]["median"])
             for name, r in (("XORD (widest k)", widest), ("Conv-2 conv1", conv2))}
  return [
    {"claim": "the larger XORD network generalises better (test accuracy rises with k)",
     "verdict": "holds" if better else ("not testable (fewer than 3 k)" if len(ks) < 3 else "does not hold"),
     "numbers": {"k": ks, "test_accuracy": test, "spearman": rho},
     "rule": f"Spearman correlation of test accuracy with k >= {RISES}, and the widest above the narrowest"},
    {"claim": "trained filters cluster: their median angle to the nearest k-means centre falls from initialisation",
     "verdict": "holds" if all(t < i for i, t in cluster.values()) else "does not hold",
     "numbers": {name: {"init": i, "trained": t} for name, (i, t) in cluster.items()}},
  ]


def run() -> None:
  cfg = settings()
  xord = xord_part(cfg)
  conv2 = conv2_part(cfg)
  results = {"config": cfg, "xord": xord, "conv2": conv2, "headlines": headlines(xord, conv2)}
  storage.write_json(os.path.join(FLAGS.workdir, "results.json"), results)
  paths = spectral_plots.save(plots.figure(results), os.path.join(FLAGS.workdir, "figure"))
  for h in results["headlines"]:
    print(f"headline: {h['claim']}: {h['verdict'].upper()}")
  print(f"wrote {FLAGS.workdir}/results.json, {', '.join(os.path.basename(p) for p in paths)}")


if __name__ == "__main__":
  app.run_app(run)

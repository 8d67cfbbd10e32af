"""Compares structured pruning criteria on a trained network (the report's Figure 2).

  python -m experiments.prune_sweep --model=lenet [--layer=fc1|all] [--workdir=runs/lenet]
      [--checkpoint=DIR] [--criteria=max_mag,min_mag,max_fp,min_fp,random] [--random_seeds=5]

Trains first (by the model's recipe, see experiments.train) when the workdir holds no trained model,
or uses the training run in --checkpoint. Then removes 0..m units of the layer by every criterion,
without retraining, all in one batched computation. Writes into <workdir>/prune_sweep/:
results.json (config, dataset source, base accuracy, every curve, random mean/std), curves.csv,
orders.npz (the removal orders, to regenerate masks), figure2.png/.pdf (the criteria explained in its
legend), and prints a summary table (the criteria explained under it; see pruning.CRITERION_HELP).
"""

import os
import time

import numpy as np
from absl import flags

from experiments import flags_common, trained_models
from redundancy_jax import checkpoint, config, data, pruning, storage, train
from redundancy_jax.models import prunable_layers
from redundancy_jax.plots import pruning as pruning_plots

flags_common.define_analysis_flags("Layer to prune, or 'all' for every prunable layer.")
flags.DEFINE_string("checkpoint", None, "Workdir of an existing training run to prune (default: --workdir).")
flags.DEFINE_list(
  "criteria", list(pruning.CRITERIA),
  "Criteria to compare, each a removal order: " + "; ".join(f"{c}: {h}" for c, h in pruning.CRITERION_HELP.items()) + ".",
)
flags.DEFINE_integer("random_seeds", 5, "Random permutations averaged for the random criterion.")
flags.DEFINE_enum("split", "test", ["test", "validation"], "Data split the accuracy is measured on.")
flags.DEFINE_integer("max_examples", None, "Use at most this many examples of the split.")
flags.DEFINE_integer("level_step", 1, "Sweep every level_step-th level (always including 0 and m).")
FLAGS = flags.FLAGS


def _trained_run(workdir: str) -> tuple[str, dict]:
  """The training run to prune: --checkpoint if given, else the one in --workdir (trained there first
  when there is none); its config must agree with the training flags given."""
  source = FLAGS.checkpoint or workdir
  if FLAGS.checkpoint and not checkpoint.has_trained(source):
    raise FileNotFoundError(f"--checkpoint={source} holds no trained model (no results.json)")
  trained_models.ensure_trained(flags_common.train_config(), source, flags_common.given_training_flags())
  return source, storage.read_json(os.path.join(source, "results.json"))


def _levels(m: int) -> np.ndarray:
  return np.unique(np.concatenate([np.arange(0, m + 1, max(1, FLAGS.level_step)), [m]]))


def _write_csv(path: str, results: dict) -> None:
  rows = []
  for layer, r in results["layers"].items():
    for c, curve in r["criteria"].items():
      rows += [(layer, c, lv, a, l, "") for lv, a, l in zip(r["levels"], curve["accuracy"], curve["loss"])]
    if "random" in r:
      rand = r["random"]
      rows += [
        (layer, "random", lv, a, l, s)
        for lv, a, l, s in zip(r["levels"], rand["accuracy_mean"], rand["loss_mean"], rand["accuracy_std"])
      ]
  header = ("layer", "criterion", "units_removed", "accuracy", "loss", "accuracy_std")
  storage.write_csv(path, header, rows)


def _print_summary(results: dict) -> None:
  cfg = results["config"]
  print(f"\n{cfg['model']} on {data.label(results['dataset'])}\n{cfg['split']} accuracy (%) on {cfg['examples']:,} "
        f"images after removing a fraction of a layer's units (unpruned: {100 * results['base_accuracy']:.2f}%)")
  for layer, r in results["layers"].items():
    print(f"\n{cfg['model']} {layer} ({r['units']} units)\n  {'units removed':<15}" + "".join(
      f"{f'{p}%':>7} " for p in (25, 50, 75, 90)))
    for name, accs in pruning.summary_rows(r):
      print(f"  {name:<15}" + "".join(f"{100 * a:7.2f} " for a in accs))
  print("\ncriteria (each a removal order, no retraining):")
  for name in cfg["criteria"]:
    print(f"  {name:<8} {pruning.CRITERION_HELP[name]}")


def run() -> None:
  source, trained = _trained_run(flags_common.workdir())
  cfg = train.TrainConfig.from_json(trained["config"])
  ds = config.load_data(cfg)
  model = trained_models.build_model(cfg, ds)
  variables = checkpoint.load_trained(source)
  layers = prunable_layers(model) if FLAGS.layer == "all" else [FLAGS.layer]
  for layer in layers:
    pruning.check_prunable(model, layer)
  x, y = (ds.test_x, ds.test_y) if FLAGS.split == "test" else (ds.val_x, ds.val_y)
  x, y = x[: FLAGS.max_examples], y[: FLAGS.max_examples]
  out_dir = os.path.join(flags_common.workdir(), "prune_sweep")
  results = {
    "config": {**cfg.to_json(), "layer": FLAGS.layer, "criteria": FLAGS.criteria, "random_seeds": FLAGS.random_seeds,
               "split": FLAGS.split, "examples": int(len(y)), "checkpoint": source},
    "dataset": ds.describe(),
    "trained": {k: trained[k] for k in ("best_step", "best_val_loss", "test_accuracy")},
    "layers": {},
  }
  orders = {}
  for layer in layers:
    m = variables["params"][layer]["kernel"].shape[-1]
    begin = time.time()
    r = pruning.compare_criteria(
      model, variables, layer, x, y, criteria=FLAGS.criteria, levels=_levels(m), random_seeds=FLAGS.random_seeds,
      seed=cfg.seed,
    )
    r["seconds"] = time.time() - begin
    print(f"{layer}: {m} units x {len(r['levels'])} levels x {len(r['orders'])} orders in {r['seconds']:.2f}s")
    orders.update({f"{layer}/{name}": np.asarray(o, np.int32) for name, o in r.pop("orders").items()})
    results["layers"][layer] = r
  results["base_accuracy"] = next(iter(results["layers"].values()))["base_accuracy"]
  storage.write_json(os.path.join(out_dir, "results.json"), results)
  storage.atomic_write(os.path.join(out_dir, "orders.npz"), lambda f: np.savez(f, **orders))
  _write_csv(os.path.join(out_dir, "curves.csv"), results)
  paths = pruning_plots.save_figure(results, os.path.join(out_dir, "figure2"))
  _print_summary(results)
  print(f"\nwrote {out_dir}/results.json, curves.csv, orders.npz, {', '.join(os.path.basename(p) for p in paths)}")


if __name__ == "__main__":
  flags_common.run_app(run)

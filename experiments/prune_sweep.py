"""Compares structured pruning criteria on a trained network (the report's Figure 2).

  python -m experiments.prune_sweep --model=lenet [--layer=fc1|all] [--workdir=runs/lenet]
      [--checkpoint=DIR] [--criteria=max_mag,min_mag,max_fp,min_fp,random] [--random_seeds=5]

Trains first (by the model's recipe, see experiments.train) when the workdir holds no trained model,
or uses the training run in --checkpoint. Then removes 0..m units of the layer by every criterion,
without retraining, all in one batched computation. Writes into <workdir>/prune_sweep/:
results.json (config, dataset source, base accuracy, every curve, random mean/std), curves.csv,
orders.npz (the removal orders, to regenerate masks), figure2.png/.pdf, and prints a summary table.
"""

import os
import time

import numpy as np
from absl import flags

from experiments import flags_common, trained_models
from redundancy_jax import checkpoint, pruning, storage, train
from redundancy_jax.models import prunable_layers
from redundancy_jax.plots import pruning as pruning_plots

flags_common.define_analysis_flags("Layer to prune, or 'all' for every prunable layer.")
flags.DEFINE_string("checkpoint", None, "Workdir of an existing training run to prune (default: --workdir).")
flags.DEFINE_list("criteria", list(pruning.CRITERIA), "Criteria to compare.")
flags.DEFINE_integer("random_seeds", 5, "Random permutations averaged for the random criterion.")
flags.DEFINE_enum("split", "test", ["test", "validation"], "Data split the accuracy is measured on.")
flags.DEFINE_integer("max_examples", None, "Use at most this many examples of the split.")
flags.DEFINE_integer("level_step", 1, "Sweep every level_step-th level (always including 0 and m).")
FLAGS = flags.FLAGS


def _trained_run(workdir: str) -> tuple[str, dict]:
  """The training run to prune: --checkpoint if given (checked against --model), else train here."""
  source = FLAGS.checkpoint or workdir
  if FLAGS.checkpoint:
    config_path = os.path.join(source, "config.json")
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"{source} holds no training run (no config.json)")
    stored = storage.read_json(config_path)["model"]
    if stored != FLAGS.model:
      raise ValueError(f"checkpoint {source} is a {stored!r} model, but --model={FLAGS.model!r}")
  if not checkpoint.has_trained(source):
    print(f"no trained model in {source}: training {FLAGS.model} first")
    train.train(flags_common.train_config(), source)
  return source, storage.read_json(os.path.join(source, "results.json"))


def _levels(m: int) -> np.ndarray:
  return np.unique(np.concatenate([np.arange(0, m + 1, max(1, FLAGS.level_step)), [m]]))


def _write_csv(path: str, results: dict) -> None:
  rows = [("layer", "criterion", "units_removed", "accuracy", "loss", "accuracy_std")]
  for layer, r in results["layers"].items():
    for c, curve in r["criteria"].items():
      rows += [(layer, c, lv, a, l, "") for lv, a, l in zip(r["levels"], curve["accuracy"], curve["loss"])]
    if "random" in r:
      rand = r["random"]
      rows += [
        (layer, "random", lv, a, l, s)
        for lv, a, l, s in zip(r["levels"], rand["accuracy_mean"], rand["loss_mean"], rand["accuracy_std"])
      ]
  text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
  storage.atomic_write(path, lambda f: f.write(text.encode()))


def _print_summary(results: dict) -> None:
  print(f"\naccuracy (%) after removing a fraction of units; base accuracy {100 * results['base_accuracy']:.2f}%")
  for layer, r in results["layers"].items():
    print(f"\n{layer} ({r['units']} units)   25%     50%     75%     90%")
    for name, accs in pruning.summary_rows(r):
      print(f"  {name:<15}" + "".join(f"{100 * a:7.2f} " for a in accs))


def run() -> None:
  source, trained = _trained_run(flags_common.workdir())
  cfg = train.TrainConfig.from_json(trained["config"])
  ds = trained_models.load_data(cfg)
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

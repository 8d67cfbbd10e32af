"""The report's Figure 2 as a command: every pruning criterion on every level of one or all layers of a
trained network, without retraining (DEFINITIONS.md section 2).

  results = run(PruneSweepConfig(train=TrainConfig(model="lenet")))   # python -m experiments.prune_sweep

`run` reuses the model trained in the workdir (training it there first when there is none, refusing
one trained with other settings than those given), then writes <workdir>/prune_sweep/: results.json,
curves.csv, orders.npz (the removal orders), figure2.png/.pdf, and prints a summary table.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Mapping

import jax
import numpy as np

from redundancy_jax.analyses import criteria as criteria_lib  # `compare_criteria` has an argument `criteria`
from redundancy_jax.analyses import pruning
from redundancy_jax.analyses.units import unit_matrix
from redundancy_jax.core import config, data, storage, train, variants
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.runs import Run, default_workdir
from redundancy_jax import models
from redundancy_jax.models import Network, topology
from redundancy_jax.core.errors import BadOption, MissingFile

SPLITS = ("test", "validation")
ALL = "all"  # --criteria: every registered criterion the layer offers


@dataclasses.dataclass(frozen=True)
class PruneSweepConfig:
  """`python -m experiments.prune_sweep`."""

  train: TrainConfig = option(TrainConfig(), "The model: reused from the workdir, or trained there first.")
  workdir: str | None = option(None, "Run folder (default runs/<model>); outputs go to <workdir>/prune_sweep.")
  checkpoint: str | None = option(None, "Workdir of an existing training run to prune (default: --workdir).")
  layer: tuple[str, ...] = option(("fc1",), "Layers to prune, or 'all' for every prunable layer, all but "
                                            "the classifier ({prunable_layers}).")
  criteria: tuple[str, ...] = option(
    (ALL,), "Criteria to compare, each a removal order (DEFINITIONS.md section 2), or 'all': every registered "
    "criterion the layer offers (the BatchNorm-scale ones only where a BatchNorm follows it). " + "; ".join(
      f"{c.name}: {c.help}" for c in criteria_lib.REGISTRY.values()) + ".",
    choices=lambda: (ALL, *criteria_lib.names()))
  criteria_examples: int = option(criteria_lib.DATA_EXAMPLES, "Training images the data-aware criteria (Taylor, mean "
                                                           "activation, APoZ) read: the first of the training split, "
                                                           "never the images the curves are measured on.")
  random_seeds: int = option(5, "Random permutations averaged for the random criterion.")
  split: str = option("test", "Data split the accuracy is measured on.", choices=SPLITS)
  max_examples: int | None = option(None, "Use at most this many examples of the split.")
  level_step: int = option(1, "Sweep every level_step-th level (always including 0 and m).")
  variables: str | None = option(None, "Prune these trained variables instead of training: an orbax checkpoint "
                                       "folder, a flax.serialization msgpack file or an .npz of '/'-joined paths "
                                       "(of the --model's variables).")


def run(cfg: PruneSweepConfig, log: Callable[[str], None] = print) -> dict:
  """Finds or trains the model, sweeps every criterion and level, writes and prints the results."""
  config.check_choices(cfg)
  if cfg.random_seeds < 1 or cfg.level_step < 1 or cfg.criteria_examples < 1:
    raise BadOption("--random_seeds, --level_step and --criteria_examples must be positive")
  workdir = cfg.workdir or default_workdir(cfg.train)
  source = Run(cfg.checkpoint or workdir)
  if cfg.checkpoint and not source.is_trained():
    raise MissingFile(f"--checkpoint={cfg.checkpoint} holds no trained model (no results.json)")
  planned = cfg.train.resolve() if cfg.variables else source.resolve(cfg.train)
  net = models.from_config(planned)
  layers = chosen_layers(net, cfg.layer)  # before anything runs
  for layer in layers:
    layer_criteria(net, layer, cfg.criteria)
  with Run(workdir).lock(), source.lock():
    trained = train.find_or_train(source, cfg.train, log, variables=cfg.variables)
    model, variables, ds, trained_cfg = trained.model, trained.variables, trained.dataset, trained.config
    x, y = (ds.test_x, ds.test_y) if cfg.split == "test" else (ds.val_x, ds.val_y)
    x, y = x[: cfg.max_examples], y[: cfg.max_examples]
    train_data = criteria_data(ds, cfg)
    results = {
      "experiment": "prune_sweep",
      "config": {**trained_cfg.to_json(), "layer": list(cfg.layer), "criteria": list(cfg.criteria),
                 "random_seeds": cfg.random_seeds, "split": cfg.split, "examples": int(len(y)),
                 "criteria_examples": int(len(train_data[1])),
                 "checkpoint": source.workdir if cfg.variables is None else None, "variables": cfg.variables},
      "dataset": ds.describe(),
      "trained": train.provenance(source, cfg.variables),
      "layers": {},
    }
    results["layers"], orders = sweep_layers(model, variables, layers, x, y, cfg, trained_cfg.seed, log, train_data)
    results["base_accuracy"] = next(iter(results["layers"].values()))["base_accuracy"]
    write_outputs(os.path.join(workdir, "prune_sweep"), results, orders, log)
  return results


def chosen_layers(net: Network, names) -> list[str]:
  """The layers `names` selects ('all': every prunable layer), each checked to be prunable (an error gives
  the reason when it is not)."""
  layers = list(topology.names(net, prunable=True)) if tuple(names) == ("all",) else list(names)
  for layer in layers:
    pruning.check_prunable(net, layer)
  return layers


def criteria_data(ds: data.Dataset, cfg: PruneSweepConfig) -> tuple:
  """(images, labels) the data-aware criteria read: the first `cfg.criteria_examples` of the training split."""
  return ds.train_x[: cfg.criteria_examples], ds.train_y[: cfg.criteria_examples]


def sweep_layers(model, variables, layers, x, y, cfg: PruneSweepConfig, seed: int, log=print,
                 train_data=None) -> tuple[dict, dict]:
  """`compare_criteria` of every layer with the config's criteria, level step and random seeds (the
  data-aware criteria reading `train_data`): ({layer: result with its time}, {"layer/criterion": order})."""
  out, orders = {}, {}
  for layer in layers:
    m = topology.kernel(variables, layer).shape[-1]
    begin = time.time()
    r = compare_criteria(model, variables, layer, x, y, criteria=cfg.criteria, levels=pruning.levels(m, cfg.level_step),
                         random_seeds=cfg.random_seeds, seed=seed, data=train_data)
    r["seconds"] = time.time() - begin
    log(f"{layer}: {m} units x {len(r['levels'])} levels x {len(r['orders'])} orders in {r['seconds']:.2f}s")
    orders.update({f"{layer}/{name}": np.asarray(o, np.int32) for name, o in r.pop("orders").items()})
    out[layer] = r
  return out, orders


def write_outputs(out_dir: str, results: dict, orders: Mapping[str, np.ndarray], log=print) -> None:
  """results.json, orders.npz, curves.csv and Figure 2 into `out_dir`; the summary table to `log`."""
  from redundancy_jax.plots import pruning as pruning_plots  # matplotlib: only where a figure is drawn

  storage.write_json(os.path.join(out_dir, "results.json"), results)
  storage.atomic_write(os.path.join(out_dir, "orders.npz"), lambda f: np.savez(f, **orders))
  _write_csv(os.path.join(out_dir, "curves.csv"), results)
  paths = pruning_plots.save_figure(results, os.path.join(out_dir, "figure2"))
  log(summary(results))
  log(f"\nwrote {out_dir}/results.json, curves.csv, orders.npz, {', '.join(os.path.basename(p) for p in paths)}")


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


def summary(results: dict) -> str:
  """The printed table: accuracy after removing about 25/50/75/90% of each layer's units (the nearest swept
  level, its own fraction in the header), criteria explained."""
  cfg = results["config"]
  lines = [f"\n{cfg['model']} on {data.label(results['dataset'])}\n{cfg['split']} accuracy (%) on {cfg['examples']:,} "
           f"images after removing a fraction of a layer's units (unpruned: {100 * results['base_accuracy']:.2f}%)"]
  for layer, r in results["layers"].items():
    labels = [f"{100 * r['levels'][i] / r['units']:.0f}%" for i in summary_levels(r)]
    lines.append(f"\n{cfg['model']} {layer} ({r['units']} units)\n  {'units removed':<15}" + "".join(
      f"{label:>7} " for label in labels))
    for name, accs in summary_rows(r):
      lines.append(f"  {name:<15}" + "".join(f"{100 * a:7.2f} " for a in accs))
  lines.append("\ncriteria (each a removal order, no retraining):")
  names = swept_criteria(results)
  width = max(map(len, names), default=8)
  lines += [f"  {name:<{width}} {criteria_lib.help_text(name)}" for name in names]
  return "\n".join(lines)


# ----------------------------------------------------------------------------- comparing criteria


def swept_criteria(results: dict) -> list[str]:
  """Every criterion a sweep's results hold, over its layers, in order (random last where it ran)."""
  return list(dict.fromkeys(c for r in results["layers"].values()
                            for c in [*r["criteria"], *(["random"] if "random" in r else [])]))


def layer_criteria(net: Network, layer: str, chosen=(ALL,), *, data: bool = True) -> tuple[list[str], dict[str, str]]:
  """(the criteria swept on `layer`, {criterion left out: why}): `chosen` as named (an error when one is
  unknown or not offered on the layer, giving the reason), or 'all': every registered criterion the layer
  offers (without training images, `data` False, those that read them left out too)."""
  info = pruning.check_prunable(net, layer)
  if tuple(chosen) == (ALL,):
    names, left_out = criteria_lib.offered(criteria_lib.names(), info)
    if not data:
      reading = [c for c in names if criteria_lib.get(c).needs in criteria_lib.DATA_NEEDS]
      left_out.update({c: "no training images given (data=None)" for c in reading})
      names = [c for c in names if c not in reading]
    return names, left_out
  criteria_lib.check(chosen, info)
  return list(chosen), {}


def compare_criteria(
  model: Network,
  variables: Mapping,
  layer: str,
  x,
  y,
  *,
  criteria=(ALL,),
  data=None,
  levels=None,
  random_seeds: int = 5,
  seed: int = 0,
  **sweep_options,
) -> dict:
  """Every criterion's removal order and accuracy curve for one layer (the report's Figure 2 data), the
  curves measured on (`x`, `y`), the data-aware criteria reading `data` = (training images, labels).

  `criteria`: names from the registry (`analyses/criteria.py`) or 'all' (every one the layer offers; without
  `data`, less the data-aware ones).
  Random pruning is summarised as mean and standard deviation over `random_seeds` permutations.
  `base_accuracy` and `base_loss` are the unpruned network's, evaluated on its own (level 0 of every
  curve must equal them). Returns {"units", "levels", "base_accuracy", "base_loss", "criteria": {name:
  {accuracy, loss}}, "random": {...}, "orders": {name: int32[m]}, "left_out": {name: why}}.
  """
  names, left_out = layer_criteria(model, layer, criteria, data=data is not None)
  chosen = [criteria_lib.get(c) for c in names]
  reading_data = [c.name for c in chosen if c.needs in criteria_lib.DATA_NEEDS]
  if reading_data and data is None:
    raise pruning.PruningError(f"criteria {', '.join(reading_data)} read training images: pass data=(x_train, "
                               f"y_train), or leave them out of criteria")
  evidence = criteria_lib.Evidence(model, variables, layer, data)
  pruning.check_finite(evidence.W, layer)
  m = evidence.W.shape[0]
  levels = pruning.check_levels(np.arange(m + 1) if levels is None else levels, m)
  orders = {c.name: c.order(evidence, None) for c in chosen if c.deterministic}
  if "random" in names:
    if random_seeds < 1:
      raise pruning.PruningError("random pruning needs at least one seed")
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), m), random_seeds)
    orders.update({f"random/{i}": criteria_lib.get("random").order(evidence, k) for i, k in enumerate(keys)})
  curves = pruning.sweep(model, variables, layer, x, y, orders, levels, **sweep_options)
  result = {
    "units": m,
    "levels": levels.tolist(),
    "criteria": {c: {k: curves[c][k].tolist() for k in ("accuracy", "loss")} for c in names if c != "random"},
    "orders": {name: np.asarray(order).tolist() for name, order in orders.items()},
    "left_out": left_out,
  }
  if "random" in names:
    acc = np.stack([curves[f"random/{i}"]["accuracy"] for i in range(random_seeds)])
    loss = np.stack([curves[f"random/{i}"]["loss"] for i in range(random_seeds)])
    result["random"] = {
      "seeds": random_seeds,
      "accuracy_mean": acc.mean(0).tolist(),
      "accuracy_std": acc.std(0).tolist(),
      "loss_mean": loss.mean(0).tolist(),
      "loss_std": loss.std(0).tolist(),
    }
  result["base_loss"], result["base_accuracy"] = variants.loss_and_accuracy(model, variables, x, y)
  return result


SUMMARY_FRACTIONS = (0.25, 0.5, 0.75, 0.9)


def summary_levels(layer_result: dict, fractions=SUMMARY_FRACTIONS) -> list[int]:
  """Indices into `layer_result["levels"]` of the swept levels nearest to each fraction of the units."""
  levels = np.asarray(layer_result["levels"])
  return [int(np.argmin(np.abs(levels - f * layer_result["units"]))) for f in fractions]


def summary_rows(layer_result: dict, fractions=SUMMARY_FRACTIONS) -> list[tuple[str, list[float]]]:
  """(criterion, accuracy at each fraction of units removed), at the nearest swept level."""
  picks = summary_levels(layer_result, fractions)
  rows = [(c, [curve["accuracy"][i] for i in picks]) for c, curve in layer_result["criteria"].items()]
  if "random" in layer_result:
    r = layer_result["random"]
    rows.append(("random (mean)", [r["accuracy_mean"][i] for i in picks]))
  return rows


def removable_fraction(levels, accuracy, base: float, loss: float) -> float:
  """The largest fraction of units removed along one order (a prefix of `levels`, which end at m) with
  `accuracy` >= `base` - `loss` at every level up to it."""
  levels, accuracy = np.asarray(levels), np.asarray(accuracy)
  bad = np.nonzero(accuracy < base - loss - 1e-12)[0]
  last = len(levels) - 1 if not len(bad) else bad[0] - 1
  return float(levels[max(last, 0)] / levels[-1])

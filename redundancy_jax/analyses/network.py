"""Where the redundancy in *your* network sits, on one page: every prunable layer swept by every criterion,
every Dense and Conv layer's spectrum against Marchenko-Pastur with its elbow and low-rank accuracy
(DEFINITIONS.md sections 2, 4 and 8), for any Flax model.

  results = run(NetworkConfig(train=TrainConfig(model="my_models.py:resnet", dataset="fashion_mnist")))
  # python -m experiments.network --model=my_models.py:resnet --dataset=fashion_mnist [--variables=PATH]

Writes into the workdir what the two commands write (prune_sweep/: results.json, curves.csv, orders.npz,
figure2; subspace/all/: results.json, esd, residuals, accuracy), then index.html and report.md: per layer
the best criterion (the most units removable within 1 point of the unpruned accuracy, then the higher
mean accuracy over levels), how many units it removes against random pruning, the outliers above the
fitted bulk edge lambda+, the elbow k and the accuracy with W replaced by W_k.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from redundancy_jax.analyses import criteria as criteria_lib
from redundancy_jax.analyses import prune_sweep, subspace
from redundancy_jax.core import config, data, storage
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.runs import default_workdir

WITHIN = 0.01  # the accuracy a removal may cost (1 point)


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
  """`python -m experiments.network`."""

  train: TrainConfig = option(TrainConfig(), "The model: reused from the workdir, trained there first, or loaded "
                                             "with --variables.")
  workdir: str | None = option(None, "Run folder (default runs/<model>, runs/FILE_FACTORY for your own); the page "
                                     "is <workdir>/index.html.")
  variables: str | None = option(None, "Analyse these trained variables instead of training: an orbax checkpoint "
                                       "folder, a flax.serialization msgpack file or an .npz of '/'-joined paths.")
  criteria: tuple[str, ...] = option((prune_sweep.ALL,), "Criteria to compare, or 'all': every registered criterion "
                                                         "each layer offers (prune_sweep's --criteria).",
                                     choices=lambda: (prune_sweep.ALL, *criteria_lib.names()))
  criteria_examples: int = option(criteria_lib.DATA_EXAMPLES, "Training images the data-aware criteria read.")
  random_seeds: int = option(5, "Random permutations averaged for the random criterion.")
  max_examples: int | None = option(2000, "Test images every evaluation uses.", quick=500)
  level_step: int = option(1, "Sweep every level_step-th level (always including 0 and m).", quick=4)
  num_ranks: int = option(24, "Ranks k in each accuracy-versus-rank curve (geometric grid plus the elbow).", quick=8)


def run(cfg: NetworkConfig, log: Callable[[str], None] = print) -> dict:
  """The two analyses of every layer and the page; returns {"pruning", "subspace", "rows", "page"}."""
  config.check_choices(cfg)
  workdir = cfg.workdir or default_workdir(cfg.train)
  shared = dict(train=cfg.train, workdir=workdir, variables=cfg.variables, max_examples=cfg.max_examples)
  pruned = prune_sweep.run(prune_sweep.PruneSweepConfig(
    **shared, layer=("all",), criteria=cfg.criteria, criteria_examples=cfg.criteria_examples,
    random_seeds=cfg.random_seeds, level_step=cfg.level_step), log)
  spectra = subspace.run(subspace.SubspaceConfig(**shared, layer=("all",), num_ranks=cfg.num_ranks), log)
  rows = layer_rows(pruned, spectra)
  page = write_page(workdir, cfg, pruned, spectra, rows)
  log(f"wrote {page}")
  return {"pruning": pruned, "subspace": spectra, "rows": rows, "page": page}


def best_criterion(layer: dict, within: float = WITHIN) -> tuple[str, float]:
  """(criterion, fraction of units removable within `within` of the unpruned accuracy): the most units,
  then the higher mean accuracy over levels; random pruning takes part by its mean curve."""
  base, levels = layer["base_accuracy"], layer["levels"]
  curves = {c: r["accuracy"] for c, r in layer["criteria"].items()}
  if "random" in layer:
    curves["random"] = layer["random"]["accuracy_mean"]
  scored = {c: (prune_sweep.removable_fraction(levels, a, base, within), float(np.mean(a))) for c, a in curves.items()}
  best = max(scored, key=lambda c: scored[c])
  return best, scored[best][0]


def layer_rows(pruned: dict, spectra: dict) -> list[dict]:
  """One row per Dense and Conv layer: its pruning (where prunable) and subspace numbers."""
  rows = []
  for name, a in spectra["layers"].items():
    fit = a["trained"]["fit"]
    sens = a["trained"].get("sensitivity", {})
    row = {"layer": name, "units": a["trained"]["m"], "inputs": a["trained"]["n"], "outliers": int(fit["spikes"]),
           "outliers_second_fit": sens.get("spikes_second_fit"), "near_edge": sens.get("near_edge"),
           "lambda_plus": float(fit["lambda_plus"]), "elbow": a["trained"].get("elbow"),
           "accuracy": a.get("a"), "rank_accuracy": a.get("a_proj")}
    if name in pruned["layers"]:
      layer = pruned["layers"][name]
      best, fraction = best_criterion(layer)
      random = prune_sweep.removable_fraction(layer["levels"], layer["random"]["accuracy_mean"],
                                              layer["base_accuracy"], WITHIN) if "random" in layer else None
      row.update(best=best, removable=int(round(fraction * layer["units"])),
                 random_removable=None if random is None else int(round(random * layer["units"])))
    rows.append(row)
  return rows


def criteria_block(pruned: dict):
  """The criteria the sweep compared, each with what it does and reads and where it comes from (the
  registry's words), and those a layer does not offer with the reason."""
  from redundancy_jax.reproduction.page import Block

  swept = prune_sweep.swept_criteria(pruned)
  left_out: dict[str, list[str]] = {}
  for layer, r in pruned["layers"].items():
    for c, why in r.get("left_out", {}).items():
      left_out.setdefault(c, []).append(f"{layer} ({why})")
  rows = []
  for name in swept:
    c = criteria_lib.REGISTRY.get(name)
    rows.append((name, c.help if c else "", criteria_lib.NEEDS[c.needs] if c else "", c.source if c else "",
                 "; ".join(left_out.get(name, [])) or "-"))
  return Block("table", header=("criterion", "what it does", "what it reads", "source", "not offered on"),
               rows=tuple(rows), id="criteria")


def write_page(workdir: str, cfg: NetworkConfig, pruned: dict, spectra: dict, rows: list[dict]) -> str:
  """<workdir>/index.html and report.md (the reproduction page's blocks and templates)."""
  from redundancy_jax.reproduction.page import Block, render

  model = pruned["config"]["model"]
  reasons = {l.name: l.reason for l in _layers(model, pruned)}
  pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
  table = []
  for r in rows:
    prunable = "best" in r
    table.append((
      r["layer"], r["units"],
      f"{r['best']}: {r['removable']} ({r['random_removable']} at random)" if prunable else
      f"not prunable: {reasons.get(r['layer'], '')}",
      f"{r['outliers']} (λ+ = {r['lambda_plus']:.3g}; {r['outliers_second_fit']} with the median fit, "
      f"{r['near_edge']} within 1% of λ+)", r["elbow"] if r["elbow"] is not None else "-",
      f"{pct(r['rank_accuracy'])} (unchanged {pct(r['accuracy'])})"))
  trained = pruned["trained"]
  source = (f"variables {trained['variables']} (sha256 {trained['sha256'][:12]}…)" if "variables" in trained else
            f"trained here, test accuracy {pct(np.mean(trained['test_accuracy']))} at step "
            f"{', '.join(map(str, np.atleast_1d(trained['best_step'])))}")
  n = pruned["config"]["examples"]
  blocks = [
    Block("h", f"Where the redundancy sits in {model}", level=1),
    Block("banner", f"{data.label(pruned['dataset'])}; {source}; every accuracy on {n:,} test images."),
    Block("p", "Units: the output features (channels) of every Dense and Conv layer; removing one sets its output, "
               "after its bias and the BatchNorm that follows it, to zero wherever it is consumed (a skip path keeps "
               "carrying its channel). Nothing is retrained."),
    Block("table", header=("layer", "units", f"best criterion: units removable within {100 * WITHIN:.0f} point "
                           "of the unpruned accuracy", "outliers above the Marchenko-Pastur bulk",
                           "elbow k", "accuracy with W -> W_k"),
          rows=tuple(tuple(str(c) for c in row) for row in table), id="layers"),
    Block("h", "Pruning curves (every criterion, every level)"),
    criteria_block(pruned),
    Block("img", "accuracy against units removed, per prunable layer", path="prune_sweep/figure2.png"),
    Block("h", "Spectra, residual curves and low-rank accuracy"),
    Block("img", "eigenvalues of W W^T against the fitted Marchenko-Pastur law", path="subspace/all/esd.png"),
    Block("img", "r(k) = ||W - W_k||^2 / ||W||^2 with the elbow k", path="subspace/all/residuals.png"),
    Block("img", "test accuracy with W replaced by W_k", path="subspace/all/accuracy.png"),
    Block("p", "Data: prune_sweep/results.json, curves.csv, orders.npz; subspace/all/results.json."),
  ]
  storage.atomic_write(os.path.join(workdir, "report.md"), lambda f: f.write(render(blocks, "report.md.j2").encode()))
  storage.write_json(os.path.join(workdir, "network.json"), {"experiment": "network", "model": model, "rows": rows})
  path = os.path.join(workdir, "index.html")
  storage.atomic_write(path, lambda f: f.write(render(blocks, "report.html.j2").encode()))
  return path


def _layers(model: str, pruned: dict):
  """The traced layers of the network the sweep used (for the reasons of those that are not prunable)."""
  from redundancy_jax import models
  from redundancy_jax.models import topology

  fields = {f.name for f in dataclasses.fields(TrainConfig)}
  trained = TrainConfig.from_json({k: v for k, v in pruned["config"].items() if k in fields})
  return topology.of(models.from_config(trained))

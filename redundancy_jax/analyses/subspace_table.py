"""The report's Figure 8: `low_rank_replacement` of every trained replica of each model, summarised over
seeds into one column per model (DEFINITIONS.md section 4), and its command.

  row = replicas_row(run_, model, dataset, trained_cfg, "fc1", x, y)   # one model's column
  header, body = table_lines([row, ...])                               # the table, one column per model
  run_table(SubspaceTableConfig(...))                                  # python -m experiments.subspace_table
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Sequence

import numpy as np

from redundancy_jax import models
from redundancy_jax.analyses.spectral import SpectralError
from redundancy_jax.analyses.subspace import low_rank_replacement
from redundancy_jax.core import config, data, storage, train
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.errors import BadOption
from redundancy_jax.core.runs import Run
from redundancy_jax.models import MODELS, topology


# Figure 8's per-seed quantities summarised over seeds (mean and std; the ranks also min and max).
TABLE_KEYS = ("k", "kept_norm_percent", "drop", "drop_project_update", "k_update",
              "drop_project_update_at_update_elbow", "a", "best_step")


def table_row(seeds: Sequence[dict], **info) -> dict:
  """One model's column of Figure 8 from its replicas' `low_rank_replacement` entries (each with its
  `best_step`); `info` (model, layer, dataset, width, steps, ...) is copied in."""
  m, n = seeds[0]["neurons"], seeds[0]["inputs"]
  row = {**info, "num_seeds": len(seeds), "neurons": m, "inputs": n, "Q": n / m}
  for key in TABLE_KEYS:
    values = [s[key] for s in seeds]
    row[f"{key}_mean"], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
  for key in ("k", "k_update"):
    row[f"{key}_min"], row[f"{key}_max"] = min(s[key] for s in seeds), max(s[key] for s in seeds)
  row["seeds"] = list(seeds)
  return row


def table_lines(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
  """Figure 8 with one column per model, as in the report: (header, rows of cells). The report's separate
  "standard deviation of a − a_proj" row is the ± of the row above it here."""
  pm = lambda r, key, f: f"{r[key + '_mean']:{f}} ± {r[key + '_std']:{f}}"
  rank = lambda key: lambda r: f"{r[key + '_mean']:.3g}" + (
    f" ({r[key + '_min']}-{r[key + '_max']})" if r[key + "_min"] != r[key + "_max"] else "")
  examples = lambda r: f"{r['examples']:,} test images" if r.get("examples") else "the test split"
  lines = [
    ("Network", lambda r: r["model"] + (f" (width {r['width']:g})" if r["width"] != 1.0 else "")),
    ("Layer", lambda r: r["layer"]),
    ("Number of neurons m", lambda r: str(r["neurons"])),
    ("Aspect ratio Q = n/m", lambda r: f"{r['Q']:.3g}"),
    ("Rank k (elbow of W; mean, range)", rank("k")),
    ("100 ‖W_k‖_F / ‖W‖_F", lambda r: pm(r, "kept_norm_percent", ".2f")),
    ("a − a_proj (points)", lambda r: pm(r, "drop", ".2f")),
    ("a − a_NK with W0 + P_k(W − W0), same k (points)", lambda r: pm(r, "drop_project_update", ".2f")),
    ("Rank k_Δ (elbow of the update W − W0)", rank("k_update")),
    ("a − a_NK at the update's elbow (points)", lambda r: pm(r, "drop_project_update_at_update_elbow", ".2f")),
    ("Test accuracy a (%)", lambda r: f"{100 * r['a_mean']:.2f} ± {100 * r['a_std']:.2f}"),
    ("Images a is measured on", examples),
    ("Seeds", lambda r: str(r["num_seeds"])),
    ("Training iterations", lambda r: f"{r['steps']:,}"),
    ("Kept iteration j (min. validation loss; mean)", lambda r: f"{r['best_step_mean']:,.0f}"),
    ("Data", lambda r: r["dataset"]),
  ]
  header = [""] + [lines[0][1](r) for r in rows]
  return header, [[name] + [fmt(r) for r in rows] for name, fmt in lines[1:]]


def table_markdown(rows: Sequence[dict]) -> str:
  """Figure 8 as Markdown (`table_lines`)."""
  header, body = table_lines(rows)
  out = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  out += ["| " + " | ".join(cells) + " |" for cells in body]
  return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- the command


@dataclasses.dataclass(frozen=True)
class SubspaceTableConfig:
  """`python -m experiments.subspace_table`."""

  train: TrainConfig = option(TrainConfig(num_seeds=10), "How each model is trained (--models names them).")
  models: tuple[str, ...] = option(("lenet", "conv2", "conv6", "vgg19"), "Models, one column each.", choices=MODELS)
  workdir_root: str = option("runs", "Folder holding one training workdir per model.")
  out: str | None = option(None, "Output path without extension (default: <workdir_root>/subspace_table).")
  layer: str = option("fc1", "Layer to replace by its low-rank approximation in every model, fc1 the "
                             "first dense layer ({layers}).")
  eval_chunk: int = option(500, "Test images per batched evaluation step.")


def table_workdir(cfg: SubspaceTableConfig, model: str) -> str:
  """<root>/<model>_seeds<K>, plus the settings that change what is trained (width, dataset, steps)."""
  t = cfg.train
  name = f"{model}_seeds{t.num_seeds or 1}"
  name += f"_w{t.width:g}" if t.width not in (None, 1.0) else ""
  name += f"_{t.dataset}" if t.dataset is not None else ""
  name += f"_steps{t.steps}" if t.steps is not None else ""
  return os.path.join(cfg.workdir_root, name)


def run_table(cfg: SubspaceTableConfig, log: Callable[[str], None] = print) -> list[dict]:
  """Trains what is missing, measures every replica of every model, writes <out>.md, .csv and .json."""
  config.check_choices(cfg)
  if cfg.train.model is not None:
    raise BadOption("the table names its models with --models, not --model")
  if not cfg.models:
    raise BadOption(f"--models names no model; valid models: {', '.join(MODELS)}")
  trains = {m: dataclasses.replace(cfg.train, model=m) for m in cfg.models}
  for m, t in trains.items():  # every name checked before anything trains
    topology.check(models.from_config(Run(table_workdir(cfg, m)).resolve(t)), cfg.layer, error=SpectralError)
  rows = []
  for m, t in trains.items():
    begin = time.time()
    run_ = Run(table_workdir(cfg, m))
    with run_.lock():
      train.find_or_train(run_, t, log)
      rows.append(_table_row(run_, cfg, log))
    log(f"{m}: done in {time.time() - begin:.0f}s")
  out = cfg.out or os.path.join(cfg.workdir_root, "subspace_table")
  storage.write_json(f"{out}.json", {"experiment": "subspace_table", "rows": rows})
  storage.atomic_write(f"{out}.md", lambda f: f.write(table_markdown(rows).encode()))
  columns = [k for k in rows[0] if k != "seeds"]
  storage.write_csv(f"{out}.csv", columns, [[r[k] for k in columns] for r in rows])
  log(table_markdown(rows))
  log(f"wrote {out}.md, {out}.csv, {out}.json")
  return rows


def _table_row(run_: Run, cfg: SubspaceTableConfig, log) -> dict:
  model, _, dataset, trained_cfg = run_.trained()
  return replicas_row(run_, model, dataset, trained_cfg, cfg.layer, dataset.test_x, dataset.test_y, log,
                      data_chunk=cfg.eval_chunk)


def replicas_row(run_: Run, model, dataset, trained_cfg, layer: str, x, y, log=print, **sweep_options) -> dict:
  """One model's column of Figure 8: `low_rank_replacement` of every trained replica on (x, y)."""
  best_steps = run_.results()["best_step"]
  seeds = []
  for seed in range(trained_cfg.num_seeds):
    entry = low_rank_replacement(model, run_.trained_variables(seed), run_.snapshot(0, replica=seed), layer, x, y,
                                 **sweep_options)
    seeds.append({"seed": seed, **entry, "best_step": best_steps[seed]})
    log(f"  {trained_cfg.model} seed {seed}: k={entry['k']} ||W_k||/||W||={entry['kept_norm_percent']:.2f}% "
        f"a={100 * entry['a']:.2f}% a_proj={100 * entry['a_proj']:.2f}% a_NK={100 * entry['a_project_update']:.2f}%; "
        f"update elbow k={entry['k_update']} a_NK={100 * entry['a_project_update_at_update_elbow']:.2f}%")
  return table_row(seeds, model=trained_cfg.model, layer=layer, workdir=run_.workdir,
                   dataset=data.label(dataset.describe()), width=trained_cfg.width, steps=trained_cfg.steps,
                   examples=len(y))

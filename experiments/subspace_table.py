"""The report's Figure 8 table: low-rank replacement of each model's first dense layer, over seeds.

  python -m experiments.subspace_table --models=lenet,conv2,conv6,vgg19 --num_seeds=10 \
      [--steps=N] [--workdir_root=runs] [--dataset=random_images] [--width=0.25] [--layer=fc1]

For every model, `--num_seeds` replicas are trained together in <workdir_root>/<model>_seeds<K>
(suffixed with _w<width>, _<dataset>, _steps<N> when those flags are given) unless that workdir already
holds them. For each replica: W = the layer's unit matrix, k = the elbow of its residual curve,
100 ||W_k||_F / ||W||_F, and the test accuracy drop a - a_proj (W -> W_k) and a - a_NK
(W -> W0 + P_k(W - W0), Nagarajan and Kolter), in percentage points. Writes <out>.md (the table, one
column per model as in the report), <out>.csv and <out>.json (per model: means, standard deviations
over seeds, and every seed's values); <out> defaults to <workdir_root>/subspace_table. It also gives
k_Δ, the elbow of the update's own residual curve, and a - a_NK there.
"""

import dataclasses
import os
import time

import numpy as np
from absl import flags

from experiments import flags_common, trained_models
from redundancy_jax import checkpoint, config, data, spectral, storage, subspace
from redundancy_jax.models import MODELS
from redundancy_jax.pruning import unit_matrix

flags.DEFINE_list("models", ["lenet", "conv2", "conv6", "vgg19"], f"Models, comma separated: {', '.join(MODELS)}.")
flags.DEFINE_string("workdir_root", "runs", "Folder holding one training workdir per model.")
flags.DEFINE_string("out", None, "Output path without extension (default: <workdir_root>/subspace_table).")
flags_common.define_analysis_flags("Layer to replace by its low-rank approximation (the first dense layer).", eval_chunk=True)
flags.FLAGS.set_default("num_seeds", 10)

FLAGS = flags.FLAGS


def workdir_for(cfg) -> str:
  """<root>/<model>_seeds<K>, plus the flags that change what is trained."""
  name = f"{cfg.model}_seeds{cfg.num_seeds}"
  if cfg.width != 1.0:
    name += f"_w{cfg.width:g}"
  if cfg.dataset is not None:
    name += f"_{cfg.dataset}"
  if cfg.steps is not None:
    name += f"_steps{cfg.steps}"
  return os.path.join(FLAGS.workdir_root, name)


def model_row(model_name: str, log=print) -> dict:
  """Trains what is missing and measures every replica of one model."""
  cfg = dataclasses.replace(flags_common.train_config(), model=model_name)
  workdir = workdir_for(cfg)
  given = {k: v for k, v in flags_common.given_training_flags().items() if k != "model"}  # --models sets it
  cfg = trained_models.ensure_trained(cfg, workdir, given, log)
  dataset = config.load_data(cfg)
  model = trained_models.build_model(cfg, dataset)
  best_steps = storage.read_json(os.path.join(workdir, "results.json"))["best_step"]
  seeds = []
  for seed in range(FLAGS.num_seeds):
    variables = checkpoint.load_trained(workdir, replica=seed)
    init_params = checkpoint.load_snapshot(workdir, 0, replica=seed)
    W, W0 = unit_matrix(variables, FLAGS.layer), unit_matrix(init_params, FLAGS.layer)
    r = spectral.residuals(W, layer=FLAGS.layer)
    k = int(spectral.elbow(r))
    r_update = spectral.residuals(W - W0, layer=f"{FLAGS.layer} update W - W0")
    k_update = int(spectral.elbow(r_update))
    ks = sorted({k, k_update})
    sweep = subspace.rank_sweep(
      model, variables, FLAGS.layer, dataset.test_x, dataset.test_y, ks, init_params=init_params,
      data_chunk=FLAGS.eval_chunk,
    )
    a = sweep["full"]
    a_proj, a_nk = float(sweep["low_rank"][ks.index(k)]), float(sweep["project_update"][ks.index(k)])
    a_nk_update = float(sweep["project_update"][ks.index(k_update)])
    seeds.append({
      "seed": seed, "k": k, "kept_norm_percent": float(100 * spectral.kept_norm(r, k)),
      "a": a, "a_proj": a_proj, "a_project_update": a_nk,
      "drop": 100 * (a - a_proj), "drop_project_update": 100 * (a - a_nk),
      "k_update": k_update, "a_project_update_at_update_elbow": a_nk_update,
      "drop_project_update_at_update_elbow": 100 * (a - a_nk_update), "best_step": best_steps[seed],
    })
    log(f"  {model_name} seed {seed}: k={k} ||W_k||/||W||={seeds[-1]['kept_norm_percent']:.2f}% "
        f"a={100 * a:.2f}% a_proj={100 * a_proj:.2f}% a_NK={100 * a_nk:.2f}%; update elbow k={k_update} "
        f"a_NK={100 * a_nk_update:.2f}%")
  m, n = W.shape
  stat = lambda key: (float(np.mean([s[key] for s in seeds])), float(np.std([s[key] for s in seeds])))
  row = {"model": model_name, "layer": FLAGS.layer, "workdir": workdir, "dataset": data.label(dataset.describe()),
         "width": cfg.width, "steps": cfg.steps, "num_seeds": len(seeds), "neurons": m, "inputs": n, "Q": n / m}
  for key in ("k", "kept_norm_percent", "drop", "drop_project_update", "k_update",
              "drop_project_update_at_update_elbow", "a", "best_step"):
    row[f"{key}_mean"], row[f"{key}_std"] = stat(key)
  for key in ("k", "k_update"):
    row[f"{key}_min"], row[f"{key}_max"] = min(s[key] for s in seeds), max(s[key] for s in seeds)
  row["seeds"] = seeds
  return row


def markdown(rows: list[dict]) -> str:
  """The table with one column per model, as the report's Figure 8."""
  pm = lambda r, key, f: f"{r[key + '_mean']:{f}} ± {r[key + '_std']:{f}}"
  rank = lambda key: lambda r: f"{r[key + '_mean']:.3g}" + (
    f" ({r[key + '_min']}-{r[key + '_max']})" if r[key + "_min"] != r[key + "_max"] else "")
  lines = [
    ("Network", lambda r: r["model"] + (f" (width {r['width']:g})" if r["width"] != 1.0 else "")),
    ("Layer", lambda r: r["layer"]),
    ("Number of neurons m", lambda r: str(r["neurons"])),
    ("Aspect ratio Q = n/m", lambda r: f"{r['Q']:.3g}"),
    ("Rank k (elbow of W; mean, range)", rank("k")),
    ("`100 ‖W_k‖_F / ‖W‖_F`", lambda r: pm(r, "kept_norm_percent", ".2f")),
    ("a − a_proj (points)", lambda r: pm(r, "drop", ".2f")),
    ("Standard deviation of a − a_proj", lambda r: f"{r['drop_std']:.2f}"),
    ("a − a_NK with `W0 + P_k(W − W0)`, same k (points)", lambda r: pm(r, "drop_project_update", ".2f")),
    ("Rank k_Δ (elbow of the update W − W0)", rank("k_update")),
    ("a − a_NK at the update's elbow (points)", lambda r: pm(r, "drop_project_update_at_update_elbow", ".2f")),
    ("Test accuracy a (%)", lambda r: f"{100 * r['a_mean']:.2f} ± {100 * r['a_std']:.2f}"),
    ("Seeds", lambda r: str(r["num_seeds"])),
    ("Training iterations", lambda r: f"{r['steps']:,}"),
    ("Kept iteration j (min. validation loss; mean)", lambda r: f"{r['best_step_mean']:,.0f}"),
    ("Data", lambda r: r["dataset"]),
  ]
  out = ["| | " + " | ".join(lines[0][1](r) for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
  out += [f"| {name} | " + " | ".join(fmt(r) for r in rows) + " |" for name, fmt in lines[1:]]
  return "\n".join(out) + "\n"


def write_outputs(rows: list[dict], out: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  storage.write_json(f"{out}.json", {"rows": rows})
  storage.atomic_write(f"{out}.md", lambda f: f.write(markdown(rows).encode()))
  columns = [k for k in rows[0] if k != "seeds"]
  storage.write_csv(f"{out}.csv", columns, [[r[k] for k in columns] for r in rows])


def run() -> None:
  unknown = [m for m in FLAGS.models if m not in MODELS]
  if unknown or not FLAGS.models:
    raise ValueError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; valid models: {', '.join(MODELS)}")
  for name in FLAGS.models:  # every name checked before anything trains
    trained_models.check_layer(dataclasses.replace(flags_common.train_config(), model=name), FLAGS.layer)
  rows = []
  for name in FLAGS.models:
    begin = time.time()
    rows.append(model_row(name))
    print(f"{name}: done in {time.time() - begin:.0f}s")
  out = FLAGS.out or os.path.join(FLAGS.workdir_root, "subspace_table")
  write_outputs(rows, out)
  print(markdown(rows))
  print(f"wrote {out}.md, {out}.csv, {out}.json")


if __name__ == "__main__":
  flags_common.run_app(run)

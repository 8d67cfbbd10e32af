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

from absl import flags

from experiments import flags_common, trained_models
from redundancy_jax import checkpoint, config, data, storage, subspace
from redundancy_jax.models import MODELS

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
    entry = subspace.low_rank_replacement(
      model, checkpoint.load_trained(workdir, replica=seed), checkpoint.load_snapshot(workdir, 0, replica=seed),
      FLAGS.layer, dataset.test_x, dataset.test_y, data_chunk=FLAGS.eval_chunk,
    )
    seeds.append({"seed": seed, **entry, "best_step": best_steps[seed]})
    log(f"  {model_name} seed {seed}: k={entry['k']} ||W_k||/||W||={entry['kept_norm_percent']:.2f}% "
        f"a={100 * entry['a']:.2f}% a_proj={100 * entry['a_proj']:.2f}% a_NK={100 * entry['a_project_update']:.2f}%; "
        f"update elbow k={entry['k_update']} a_NK={100 * entry['a_project_update_at_update_elbow']:.2f}%")
  return subspace.table_row(seeds, model=model_name, layer=FLAGS.layer, workdir=workdir,
                            dataset=data.label(dataset.describe()), width=cfg.width, steps=cfg.steps)


def write_outputs(rows: list[dict], out: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  storage.write_json(f"{out}.json", {"rows": rows})
  storage.atomic_write(f"{out}.md", lambda f: f.write(subspace.table_markdown(rows).encode()))
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
  print(subspace.table_markdown(rows))
  print(f"wrote {out}.md, {out}.csv, {out}.json")


if __name__ == "__main__":
  flags_common.run_app(run)

"""Subspace analysis of a trained model's layers (report, section 3.3; Figures 6-7).

  python -m experiments.subspace --model=lenet [--layer=fc1|all] [--workdir=runs/lenet] [--num_ranks=48]

Trains the model first (by its recipe, the training flags apply) when --workdir holds no trained model.
Writes into <workdir>/subspace/<layer>/ (<layer> is "all" with --layer=all):
  config.json     this analysis' settings and the training config it used;
  results.json    per layer: eigenvalues of W W^T at initialisation and trained, the Glorot and fitted
                  Marchenko-Pastur parameters, spike counts, the residual curve r(k), the elbow k,
                  100 ||W_k||_F / ||W||_F, and the test accuracy for a grid of ranks with W -> W_k and
                  W -> W0 + P_k(W - W0) (a, a_proj and a_project_update at the elbow);
  esd.png/.pdf, residuals.png/.pdf, accuracy.png/.pdf (one panel, or a pair of panels, per layer).
"""

import os
import time

from absl import flags

from experiments import flags_common, trained_models
from redundancy_jax import checkpoint, config, data, storage, subspace
from redundancy_jax.plots import spectral as plots

flags_common.define_analysis_flags("Layer to analyse, or 'all' for every layer of the model.", eval_chunk=True)
flags.DEFINE_integer("replica", 0, "Which trained replica (seed index) to analyse.")
flags.DEFINE_integer("num_ranks", 48, "Ranks k in the accuracy curve (geometric grid plus the elbow); 0: every k.")
flags.DEFINE_integer("rank_chunk", 16, "Ranks evaluated together (vmapped) per step.")

FLAGS = flags.FLAGS


def run(log=print) -> dict:
  """Trains if needed, analyses the layers, writes results and figures; returns the results."""
  workdir = flags_common.workdir()
  if FLAGS.layer != "all":
    trained_models.check_layer(flags_common.train_config(), FLAGS.layer)
  cfg = trained_models.ensure_trained(flags_common.train_config(), workdir, flags_common.given_training_flags(), log)
  if not 0 <= FLAGS.replica < cfg.num_seeds:
    raise ValueError(f"--replica={FLAGS.replica} is outside 0..{cfg.num_seeds - 1} ({cfg.num_seeds} trained)")
  dataset = config.load_data(cfg)
  model = trained_models.build_model(cfg, dataset)
  layers = [layer.name for layer in model.plan] if FLAGS.layer == "all" else [FLAGS.layer]
  variables = checkpoint.load_trained(workdir, replica=FLAGS.replica)
  init_params = checkpoint.load_snapshot(workdir, 0, replica=FLAGS.replica)
  out_dir = os.path.join(workdir, "subspace", FLAGS.layer)
  settings = {"layer": FLAGS.layer, "replica": FLAGS.replica, "num_ranks": FLAGS.num_ranks,
              "eval_chunk": FLAGS.eval_chunk, "rank_chunk": FLAGS.rank_chunk}
  storage.write_json(os.path.join(out_dir, "config.json"), {**settings, "training": cfg.to_json()})

  analyses = {}
  for index, layer in enumerate(layers):
    begin = time.time()
    analyses[layer] = subspace.analyze_layer(
      model, variables, init_params, layer, dataset.test_x, dataset.test_y,
      num_ranks=FLAGS.num_ranks,
      data_chunk=FLAGS.eval_chunk, k_chunk=FLAGS.rank_chunk,
    )
    a = analyses[layer]
    t = a["trained"]
    line = f"[{index + 1}/{len(layers)}] {layer}: m={t['m']} n={t['n']} Q={t['Q']:.3g}"
    line += f" spikes {t['fit']['spikes']} (TW {t['fit']['spikes_tw']})"
    if "elbow" in t:
      line += (f" elbow k={t['elbow']} ||W_k||/||W||={t['kept_norm_percent']:.2f}% "
               f"a={100 * a['a']:.2f}% a_proj={100 * a['a_proj']:.2f}% a_NK={100 * a['a_project_update']:.2f}%; "
               f"update elbow k={a['update']['elbow']} a_NK={100 * a['a_project_update_at_update_elbow']:.2f}%")
    log(f"{line} ({time.time() - begin:.1f}s)")

  results = {"model": cfg.model, "workdir": workdir, "dataset": dataset.describe(), **settings, "layers": analyses}
  storage.write_json(os.path.join(out_dir, "results.json"), results)
  ncols = 2 if len(layers) == 1 else 4
  title = f"{cfg.model} (replica {FLAGS.replica}) on {data.label(results['dataset'])}"
  plots.save(plots.esd_figure([(l, a["init"], a["trained"]) for l, a in analyses.items()], ncols, title),
             os.path.join(out_dir, "esd"))
  ranked = [(l, a) for l, a in analyses.items() if "sweep" in a]  # layers with a rank to choose
  if ranked:
    residuals = [(l, a["trained"], a["init"], a["update"]) for l, a in ranked]
    plots.save(plots.residuals_figure(residuals, ncols, title), os.path.join(out_dir, "residuals"))
    accuracy = [(l, a["sweep"], a["trained"]["elbow"], a["update"]["elbow"]) for l, a in ranked]
    plots.save(plots.accuracy_figure(accuracy, ncols, f"{title}: test accuracy"), os.path.join(out_dir, "accuracy"))
  log(f"wrote {out_dir}/results.json and esd, residuals, accuracy (.png, .pdf)")
  return results


if __name__ == "__main__":
  flags_common.run_app(run)

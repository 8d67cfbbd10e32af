"""Training dynamics of one layer as a time-varying graph (report section 3.2, Figures 3-5).

  python -m experiments.dynamics --model=lenet --layer=fc1 --workdir=runs/lenet_dyn \
      [--sigma=1.0] [--threshold=0.41] [--compare_workdir=runs/other]

Uses the per-epoch parameter snapshots of the training run in --workdir (and trains it with the
training flags first when the workdir holds no run). Writes into --outdir (default
<workdir>/dynamics_<layer>): frames/epoch_XXXXX.png (one per snapshot epoch), init_vs_converged.png
and .pdf (Figure 3; with --compare_workdir one row per run, Figure 5), dynamics.gif (and dynamics.mp4
when imageio-ffmpeg is installed), dynamics.html (the interactive offline page) and dynamics.json
(per-epoch graphs, positions and statistics).
"""

import dataclasses
import os
import time

from absl import flags

from experiments import flags_common, trained_models
from redundancy_jax import checkpoint, config, dynamics, force_layout, storage, train
from redundancy_jax.models import check_layer
from redundancy_jax.plots import dynamics as plots

flags_common.define_analysis_flags("Layer whose units are the nodes (any layer but the classifier).")
flags.DEFINE_float("sigma", 1.0, "Width of the Gaussian: A_ij = exp(-(1 - cos_ij) / sigma^2).")
flags.DEFINE_float("threshold", None, "Edges lighter than this are dropped (default: mean degree 2 at the last epoch).")
flags.DEFINE_float("mean_degree", 2.0, "Mean degree at the last epoch that picks the default threshold.")
flags.DEFINE_integer("ticks", 300, "d3-force ticks per epoch.")
flags.DEFINE_float("reheat_alpha", 0.3, "Alpha each epoch's layout restarts from (the first starts at 1).")
flags.DEFINE_bool("weighted", False, "Multiply d3's link strength by the edge weight.")
flags.DEFINE_integer("num_examples", 1000, "Test images for the repeated / removable units.")
flags.DEFINE_integer("every", 1, "Use every k-th snapshot (the first and the last are always used).")
flags.DEFINE_string("compare_workdir", None, "A second training run shown side by side (same layer).")
flags.DEFINE_string("outdir", None, "Output folder (default: <workdir>/dynamics_<layer>).")
flags.DEFINE_float("fps", 8.0, "Frames per second of the animation.")
flags.DEFINE_integer("max_nodes", 2000, "Larger layers: a warning, and edges capped to the strongest per node.")
flags.DEFINE_integer("edges_per_node", 10, "Strongest edges kept per node in a layer over --max_nodes.")

FLAGS = flags.FLAGS


def _no_snapshots(workdir: str, model: str) -> FileNotFoundError:
  return FileNotFoundError(
    f"{workdir} has no parameter snapshots (snapshots/epoch_*.npz). Produce them by training into a fresh "
    f"workdir: `python -m experiments.train --model={model} --workdir=NEW` (or run this command with "
    f"--workdir=NEW, which trains first), then `python -m experiments.dynamics --workdir=NEW`"
  )


def load_run(workdir: str, layer: str, *, may_train: bool):
  """(model, {epoch: params}, dataset, training config) of the run in `workdir`, training it first if
  allowed; the main run must agree with the training flags given."""
  if not checkpoint.snapshot_epochs(workdir):
    cfg = flags_common.train_config().resolve()
    trained_models.check_layer(cfg, layer, prunable=True)  # before training
    if checkpoint.has_trained(workdir) or not may_train:
      raise _no_snapshots(workdir, cfg.model)
    print(f"no training run in {workdir}: training {cfg.model} first")
    train.train(cfg, workdir)
  given = flags_common.given_training_flags() if may_train else {}  # the compared run is another run
  cfg = trained_models.check_reuse(workdir, given)
  ds = config.load_data(cfg)
  model = trained_models.build_model(cfg, ds)
  check_layer(model, layer, prunable=True, error=dynamics.DynamicsError)
  epochs = checkpoint.snapshot_epochs(workdir)
  if not epochs:
    raise _no_snapshots(workdir, cfg.model)
  chosen = sorted(set(epochs[:: max(FLAGS.every, 1)]) | {epochs[-1]})
  return model, {e: checkpoint.load_snapshot(workdir, e) for e in chosen}, ds, cfg


def run() -> None:
  workdir = flags_common.workdir()
  layout = force_layout.LayoutParams(ticks=FLAGS.ticks, reheat_alpha=FLAGS.reheat_alpha, weighted=FLAGS.weighted)
  cfg = dynamics.DynamicsConfig(
    layer=FLAGS.layer, sigma=FLAGS.sigma, threshold=FLAGS.threshold, mean_degree=FLAGS.mean_degree,
    layout=layout, seed=FLAGS.seed, max_nodes=FLAGS.max_nodes, edges_per_node=FLAGS.edges_per_node,
  ).check()
  runs = []
  for path in [workdir] + ([FLAGS.compare_workdir] if FLAGS.compare_workdir else []):
    model, snapshots, ds, training = load_run(path, cfg.layer, may_train=path == workdir)
    begin = time.time()
    x = ds.test_x[: FLAGS.num_examples]
    result = dynamics.analyse(model, snapshots, cfg, x=x, log=print)
    result.update(workdir=path, training=training.to_json(), dataset=ds.describe())
    print(f"{path}: {len(snapshots)} epochs analysed in {time.time() - begin:.1f}s")
    runs.append((os.path.basename(os.path.normpath(path)), result))
    cfg = dataclasses.replace(cfg, threshold=result["threshold"])  # the compared run: the same threshold
  outdir = FLAGS.outdir or os.path.join(workdir, f"dynamics_{cfg.layer}")
  os.makedirs(outdir, exist_ok=True)
  begin = time.time()
  saved = {"runs": [dynamics.rounded({"label": label, **result}, 4) for label, result in runs]}
  storage.write_json(os.path.join(outdir, "dynamics.json"), saved)
  written = plots.render_frames(runs, outdir, fps=FLAGS.fps)
  written["figure"] = plots.save_init_vs_converged(runs, os.path.join(outdir, "init_vs_converged.png"))
  written["page"] = [plots.write_page(os.path.join(outdir, "dynamics.html"), runs)]
  print(f"figures written in {time.time() - begin:.1f}s:")
  for name, paths in written.items():
    print(f"  {name}: {paths[0]}" + (f" .. {paths[-1]} ({len(paths)} files)" if len(paths) > 1 else ""))
  print(f"  json: {os.path.join(outdir, 'dynamics.json')}")


if __name__ == "__main__":
  flags_common.run_app(run)

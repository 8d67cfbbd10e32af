"""Benchmark of the training-dynamics layout (issue 4's performance targets).

  python -m benchmarks.dynamics [--nodes=512] [--epochs=60] [--ticks=300] [--nx_layouts=3] \
      [--experiment_workdir=runs/lenet_dyn]

1. The compiled d3-force layout (`force_layout.layout_sequence`: `--nodes` units, `--ticks` ticks per epoch,
   `--epochs` epochs, each from the previous one) against networkx `spring_layout` on the same graphs
   with the same iteration count: `method="force"` (Fruchterman-Reingold iterations; networkx's own
   choice for >= 500 nodes is `method="energy"`, also timed) and, as the most favourable NumPy
   reference, networkx's dense vectorised Fruchterman-Reingold (what it runs below 500 nodes).
   networkx is timed on `--nx_layouts` of the graphs, evenly spaced (one layout takes seconds).
   Target: at least 10x faster per layout.
2. The whole `python -m experiments.dynamics --model=lenet --layer=fc1` run (wall clock, a fresh
   process, compilation included, training excluded: the workdir is trained first when needed).
   Target: under 2 minutes on 2 cores.
"""

import statistics
import subprocess
import sys
import time

import networkx as nx
import numpy as np
from absl import app, flags

from benchmarks.common import record, table
from redundancy_jax.analyses import dynamics, force_layout
from redundancy_jax.core.runs import Run

flags.DEFINE_integer("nodes", 512, "Units (nodes) per graph.")
flags.DEFINE_integer("epochs", 60, "Graphs (epochs) in the sequence.")
flags.DEFINE_integer("ticks", 300, "Ticks (networkx: iterations) per layout.")
flags.DEFINE_integer("repeats", 3, "Timed runs of the compiled sequence (the median is reported).")
flags.DEFINE_integer("nx_layouts", 3, "Graphs laid out by networkx (evenly spaced over the epochs).")
flags.DEFINE_float("mean_degree", 8.0, "Mean degree of the last graph (sets the threshold).")
flags.DEFINE_string("experiment_workdir", "runs/lenet_dyn", "LeNet run for the end-to-end timing ('' to skip).")

FLAGS = flags.FLAGS


def synthetic_graphs(m: int, epochs: int, mean_degree: float, seed: int = 0) -> list[np.ndarray]:
  """A layer whose m units drift from a random initialisation towards 16 shared directions."""
  rng = np.random.default_rng(seed)
  W0 = rng.normal(size=(m, 256))
  targets = rng.normal(size=(16, 256))[rng.integers(0, 16, m)] * 1.5
  Ws = [W0 + (t / (epochs - 1)) * (targets - W0 * 0.3) + 0.05 * rng.normal(size=W0.shape) for t in range(epochs)]
  threshold = dynamics.auto_threshold(Ws[-1], 1.0, mean_degree)
  return [dynamics.edge_weights(W, 1.0, threshold) for W in Ws]


def _time(fn) -> float:
  begin = time.perf_counter()
  fn()
  return time.perf_counter() - begin


def main(argv):
  del argv
  graphs = synthetic_graphs(FLAGS.nodes, FLAGS.epochs, FLAGS.mean_degree)
  edges = [np.count_nonzero(A) // 2 for A in graphs]
  print(f"{FLAGS.epochs} graphs of {FLAGS.nodes} nodes, {min(edges)}..{max(edges)} edges, {FLAGS.ticks} ticks each")

  params = force_layout.LayoutParams(ticks=FLAGS.ticks)
  run = lambda: force_layout.layout_sequence(graphs, params).block_until_ready()
  first = _time(run)
  ours = statistics.median(_time(run) for _ in range(FLAGS.repeats))
  per_layout = ours / FLAGS.epochs
  print(f"compiled layout_sequence: first call {first:.2f}s (with compilation); median of {FLAGS.repeats}: "
        f"{ours:.2f}s for {FLAGS.epochs} layouts = {1000 * per_layout:.1f} ms per layout")

  picks = np.linspace(0, FLAGS.epochs - 1, FLAGS.nx_layouts).round().astype(int)
  names = ("spring_layout(method='force')", "spring_layout(method='auto' = 'energy')", "dense FR (nx, vectorised)")
  timings = {name: [] for name in names}
  for t in picks:
    A = graphs[t]
    G = nx.from_numpy_array(A)
    timings["spring_layout(method='force')"].append(
      _time(lambda: nx.spring_layout(G, iterations=FLAGS.ticks, threshold=0.0, seed=0, method="force"))
    )
    timings["spring_layout(method='auto' = 'energy')"].append(
      _time(lambda: nx.spring_layout(G, iterations=FLAGS.ticks, threshold=0.0, seed=0))
    )
    dense = nx.drawing.layout._fruchterman_reingold  # networkx's vectorised path, used below 500 nodes
    timings["dense FR (nx, vectorised)"].append(
      _time(lambda: dense(A, None, None, None, FLAGS.ticks, 0.0, 2, np.random.RandomState(0)))
    )
  print(f"\nnetworkx on graphs {picks.tolist()} ({FLAGS.ticks} iterations, median per layout) against ours")
  rows = []
  for name, ts in timings.items():
    median = statistics.median(ts)
    rows.append([name, f"{median:.3g}", f"{1000 * per_layout:.3g}", f"{median / per_layout:.1f}x",
                 f"{median * FLAGS.epochs:.3g} vs {ours:.3g}"])
  print(table(rows, ["networkx layout", "s per layout", "compiled d3 ms per layout", "speed-up",
                     f"{FLAGS.epochs} layouts: networkx s vs ours s"]))
  ratio = statistics.median(timings["spring_layout(method='force')"]) / per_layout
  print(f"target >= 10x vs spring_layout: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}x)")
  record("dynamics", {"nodes": FLAGS.nodes, "layouts": FLAGS.epochs, "ticks": FLAGS.ticks,
                      "ours_s_per_layout": per_layout, "first_call_s": first,
                      "networkx_s_per_layout": {name: statistics.median(ts) for name, ts in timings.items()}})

  workdir = FLAGS.experiment_workdir
  if workdir:
    if not Run(workdir).snapshot_epochs():
      print(f"training LeNet into {workdir} first (not timed)")
      subprocess.run([sys.executable, "-m", "experiments.train", "--model=lenet", f"--workdir={workdir}"], check=True)
    cmd = [sys.executable, "-m", "experiments.dynamics", "--model=lenet", "--layer=fc1", f"--workdir={workdir}"]
    begin = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - begin
    if done.returncode:
      sys.exit(f"error: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    frames = len(Run(workdir).snapshot_epochs())
    print(f"{' '.join(cmd[1:])}: {wall:.1f}s wall ({frames} epochs, 300 units), target < 120s: "
          f"{'met' if wall < 120 else 'NOT met'}")


if __name__ == "__main__":
  app.run(main)

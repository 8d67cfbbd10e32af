"""The batched pruning sweep against the loop a user would write, side by side in one run.

  python -m benchmarks.prune_sweep [--images=2000] [--repeats=3] [--skip_vgg] [--lenet_workdir=runs/lenet]

For LeNet fc1 (real MNIST images) and Conv-2 fc1 (generated CIFAR-shaped images), `--images` of them:
4 deterministic criteria + 5 random orders, every level 0..m, through `pruning.sweep`. The loop is one
jitted forward per criterion and level with `pruning.remove_units`; for Conv-2 it is timed on a sample
of levels and extrapolated (a full run would take hours on 2 cores). Also XLA's planned peak memory of
the sweep of every prunable layer of VGG19 (`--images` images, all levels, 9 orders; compiled, not run):
the CPU form's head per data chunk, and the whole sweep as the one program of the accelerator form
(`pruning.lower_sweep`); the machine's matmul FLOP/s; and LeNet fc1's `compare_criteria` end to end with
every registered criterion against the report's five (the data-aware statistics included).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import torch_anchor
from benchmarks.common import (
  compiled_memory_bytes, lowered_memory_bytes, median_seconds, print_roofline, record, removal_orders, table,
)
from redundancy_jax.analyses import criteria, prune_sweep, pruning
from redundancy_jax.core import data
from redundancy_jax.core.runs import Run
from redundancy_jax.models import create_model, topology

flags.DEFINE_integer("images", 2000, "Images each sweep evaluates on (and VGG19's memory plan is for).", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed sweeps per layer (the median is reported).", lower_bound=1)
flags.DEFINE_bool("skip_vgg", False, "Skip the VGG19 memory table (about a minute of compilation).")
flags.DEFINE_string("lenet_workdir", "runs/lenet", "Trained LeNet to time, if there is one (else an initialised one).")
FLAGS = flags.FLAGS

DATA_CHUNK = {True: 2048, False: 250}  # pruning.sweep's default data chunk, running sums (True) or masks


def loop_accuracies(model, variables, layer, x, y, orders, levels) -> np.ndarray:
  """What a user would write: one jitted forward per (order, level)."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  pruned = lambda v, keep: pruning.remove_units(model, v, layer, keep)
  forward = jax.jit(lambda v, keep: jnp.mean(jnp.argmax(model.apply(pruned(v, keep), x), -1) == y))
  out = []
  for order in orders.values():
    masks = pruning.level_masks(order, jnp.asarray(levels))
    out.append([float(forward(variables, keep)) for keep in masks])
  return np.asarray(out)


def bench_layer(name, model, variables, layer, x, y, mean, std, loop_levels=None) -> dict:
  """One layer: the sweep's median and first-call time against our loop's and PyTorch's loop's, and
  whether their accuracies agree (loops on `loop_levels` only, extrapolated, when given)."""
  orders = removal_orders(variables, layer)
  m = topology.check(model, layer).units
  levels = np.arange(m + 1)
  run = lambda: pruning.sweep(model, variables, layer, x, y, orders, levels)
  begin = time.perf_counter()
  result = run()
  first = time.perf_counter() - begin
  sweep_s = median_seconds(run, repeats=FLAGS.repeats, warmup=0)
  sample = levels if loop_levels is None else np.asarray(loop_levels)
  scale = len(levels) / len(sample)
  loop_accuracies(model, variables, layer, x, y, {"max_mag": orders["max_mag"]}, sample[:1])  # compiles
  begin = time.perf_counter()
  loop_acc = loop_accuracies(model, variables, layer, x, y, orders, sample)
  loop_s = (time.perf_counter() - begin) * scale
  ours = np.stack([result[k]["accuracy"][sample] for k in orders])
  torch_run = torch_anchor.sweep_loop(name.split()[0], variables, layer, x, y, orders, sample, mean, std)
  return {
    "layer": name, "levels": m + 1, "orders": len(orders), "images": len(y), "sweep_s": sweep_s, "first_call_s": first,
    "loop_s": loop_s, "torch_loop_s": None if torch_run is None else torch_run[0] * scale,
    "loop_levels_timed": int(len(sample)), "differing_from_loop": differing(ours, loop_acc, len(y)),
    "differing_from_torch": None if torch_run is None else differing(ours, torch_run[1], len(y)),
  }


def differing(a: np.ndarray, b: np.ndarray, n: int) -> int:
  """How many (order, level) accuracies on `n` images differ by at least one correct image (float32 and
  float64 means of the same count differ in the last bits, which is not a difference)."""
  return int(np.sum(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) * n >= 0.5))


def row(r: dict) -> list:
  extrapolated = "" if r["loop_levels_timed"] == r["levels"] else f" (from {r['loop_levels_timed']} levels)"
  torch = r["torch_loop_s"]
  return [
    r["layer"], f"{r['levels']} x {r['orders']}", r["images"], f"{r['sweep_s']:.3f}", f"{r['first_call_s']:.2f}",
    f"{r['loop_s']:.1f}{extrapolated}", f"{r['loop_s'] / r['sweep_s']:.0f}x",
    "-" if torch is None else f"{torch:.1f}{extrapolated}", "-" if torch is None else f"{torch / r['sweep_s']:.0f}x",
    f"{r['differing_from_loop']} of {r['orders'] * r['loop_levels_timed']}",
    "-" if torch is None else f"{r['differing_from_torch']} of {r['orders'] * r['loop_levels_timed']}",
  ]


def lenet_case() -> list:
  ds = data.load_bundled_mnist(0)
  x = np.concatenate([ds.test_x, ds.val_x])[: FLAGS.images]
  y = np.concatenate([ds.test_y, ds.val_y])[: FLAGS.images]
  model = create_model("lenet", mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
  variables = model.init(jax.random.key(0), ds.image_shape)
  if Run(FLAGS.lenet_workdir).is_trained():
    variables = Run(FLAGS.lenet_workdir).trained_variables()
    print(f"using the trained LeNet in {FLAGS.lenet_workdir}")
  else:
    print(f"no trained LeNet in {FLAGS.lenet_workdir}: timing an initialised one (timing does not depend on training)")
  return bench_layer("lenet fc1", model, variables, "fc1", x, y, ds.mean, ds.std)


def criteria_case() -> dict:
  """LeNet fc1: `compare_criteria` end to end (orders, the data-aware statistics, the sweep) with the
  report's five criteria (9 orders) against every registered one LeNet offers, medians of `--repeats`."""
  ds = data.load_bundled_mnist(0)
  x, y = ds.test_x[: FLAGS.images], ds.test_y[: FLAGS.images]
  train_data = (ds.train_x[: criteria.DATA_EXAMPLES], ds.train_y[: criteria.DATA_EXAMPLES])
  model = create_model("lenet", mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
  variables = (Run(FLAGS.lenet_workdir).trained_variables() if Run(FLAGS.lenet_workdir).is_trained()
               else model.init(jax.random.key(0), ds.image_shape))
  out = {"images": int(len(y))}
  for name, chosen in (("report", criteria.REPORT_CRITERIA), ("all", (prune_sweep.ALL,))):
    run = lambda: prune_sweep.compare_criteria(model, variables, "fc1", x, y, criteria=chosen, data=train_data)
    out[name] = {"orders": len(run()["orders"]), "seconds": median_seconds(run, repeats=FLAGS.repeats, warmup=0)}
  stats = lambda: criteria.data_statistics(model, variables, "fc1", *train_data)
  stats()
  out["data_statistics_s"] = median_seconds(stats, repeats=FLAGS.repeats, warmup=0)
  return out


def conv2_case() -> list:
  ds = data.random_images(seed=0, n_train=8, n_val=8, n_test=FLAGS.images)
  model = create_model("conv2", mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
  variables = model.init(jax.random.key(0), ds.image_shape)
  return bench_layer("conv2 fc1", model, variables, "fc1", ds.test_x, ds.test_y, ds.mean, ds.std, loop_levels=[0, 128, 256])


def vgg_memory(n_images: int) -> list[list]:
  """XLA's planned peak memory (compiled, not run) of the sweep of every prunable VGG19 layer: the CPU
  form's head (the network up to the layer, per data chunk) and the whole sweep as the one program of
  the accelerator form (`pruning.lower_sweep`), 9 orders, every level."""
  model = create_model("vgg19", mean=(0.5,) * 3, std=(0.25,) * 3, image_shape=(32, 32, 3))
  variables = model.init(jax.random.key(0), (32, 32, 3))
  x, y = np.zeros((n_images, 32, 32, 3), np.uint8), np.zeros(n_images, np.int32)
  rows = []
  for info in topology.of(model):
    if not info.prunable:
      continue
    nested = info.consumer_kind == "dense"
    chunk = min(n_images, DATA_CHUNK[nested])
    head = jax.jit(lambda v, x, layer=info.name: topology.activations(model, v, x, layer))
    head_bytes = compiled_memory_bytes(head, variables, jnp.asarray(x[:chunk]))
    whole = lowered_memory_bytes(pruning.lower_sweep(model, variables, info.name, x, y,
                                                     removal_orders(variables, info.name)))
    rows.append([info.name, info.units, "running sums" if nested else "masks", chunk, f"{head_bytes / 2**30:.2f}",
                 f"{whole / 2**30:.2f}"])
  return rows


def main(argv):
  del argv
  roof = print_roofline()
  header = ["layer", "levels x orders", "images", "sweep s (median)", "first call s (compile)", "our loop s",
            "vs our loop", "PyTorch loop s", "vs PyTorch loop", "accuracies differing from our loop",
            "differing from PyTorch's"]
  results = [lenet_case(), conv2_case()]
  print(table([row(r) for r in results], header))
  if torch_anchor.torch_or_none() is None:
    print(f"\n{torch_anchor.MISSING}")
  n = results[0]["images"]
  lenet_flops = 2 * n * 784 * 300 + 2 * n * 300 * 100 + 9 * (n * 300 * 100 + 2 * 301 * n * 100 * 10)
  sweep_s = results[0]["sweep_s"]
  print(f"\nLeNet fc1 sweep: {lenet_flops / 1e9:.2f} GFLOP (analytic) in {sweep_s:.3f} s = "
        f"{lenet_flops / sweep_s / 1e9:.1f} GFLOP/s, {lenet_flops / sweep_s / roof:.0%} of the matmul roofline")
  crit = criteria_case()
  print(f"\nLeNet fc1, compare_criteria end to end on {crit['images']:,} images (orders, the data-aware statistics on "
        f"{criteria.DATA_EXAMPLES:,} training images, the sweep), median of {FLAGS.repeats}:")
  print(table([["the report's five", crit["report"]["orders"], f"{crit['report']['seconds']:.3f}", "1.00x"],
               ["every criterion LeNet offers", crit["all"]["orders"], f"{crit['all']['seconds']:.3f}",
                f"{crit['all']['seconds'] / crit['report']['seconds']:.2f}x"]],
              ["criteria", "orders", "seconds", "ratio"]))
  print(f"of which the data-aware statistics (one compiled pass): {crit['data_statistics_s']:.3f} s")
  memory = []
  if not FLAGS.skip_vgg:
    print(f"\nVGG19, every prunable layer, {FLAGS.images:,} images, all levels, 9 orders: XLA's planned memory "
          f"(GiB): the CPU form's head per data chunk, and the whole sweep as one program (accelerator form)")
    memory = vgg_memory(FLAGS.images)
    print(table(memory, ["layer", "units", "path", "data chunk", "head (CPU form)", "whole sweep, one program"]))
  record("prune_sweep", {"roofline_gflops": roof / 1e9, "layers": results, "criteria": crit,
                         "lenet_fc1_roofline_fraction": lenet_flops / sweep_s / roof, "vgg19_memory_gib": memory})


if __name__ == "__main__":
  app.run(main)

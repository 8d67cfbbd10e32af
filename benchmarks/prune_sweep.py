"""The batched pruning sweep against the loop a user would write, side by side in one run.

  python -m benchmarks.prune_sweep [--skip_vgg]

For LeNet fc1 (real MNIST images, 2,000 of them) and Conv-2 fc1 (generated CIFAR-shaped images):
4 deterministic criteria + 5 random orders, every level 0..m. The loop is one jitted forward per
criterion and level with `pruning.remove_units`; for Conv-2 it is timed on a sample of levels and
extrapolated (a full run would take hours on 2 cores). Also XLA's planned peak memory of the sweep for
every prunable layer of VGG19 (2,000 images, all levels), and the machine's matmul FLOP/s.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_memory_bytes, matmul_flops_per_second, median_seconds, table
from redundancy_jax import data, pruning
from redundancy_jax.models import create_model, init_variables, prunable_layers

CRITERIA = pruning.DETERMINISTIC_CRITERIA


def _orders(variables, layer):
  W = pruning.unit_matrix(variables, layer)
  orders = {c: pruning.removal_order(W, c) for c in CRITERIA}
  for i, k in enumerate(jax.random.split(jax.random.key(0), 5)):
    orders[f"random/{i}"] = pruning.removal_order(W, "random", key=k)
  return orders


def _loop(model, variables, layer, x, y, orders, levels):
  """What a user would write: one jitted forward per (criterion, level)."""
  forward = jax.jit(lambda v, keep: jnp.mean(jnp.argmax(model.apply(pruning.remove_units(v, layer, keep), x), -1) == y))
  out = []
  for order in orders.values():
    masks = pruning.level_masks(order, jnp.asarray(levels))
    out.append([float(forward(variables, keep)) for keep in masks])
  return np.asarray(out)


def bench_layer(name, model, variables, layer, x_u8, y, normalization, loop_levels=None):
  orders = _orders(variables, layer)
  m = variables["params"][layer]["kernel"].shape[-1]
  levels = np.arange(m + 1)
  run = lambda: pruning.sweep(model, variables, layer, x_u8, y, orders, levels, normalization=normalization)
  begin = time.perf_counter()
  result = run()
  first = time.perf_counter() - begin
  sweep_s = median_seconds(run, repeats=3, warmup=0)
  x = data.normalize(jnp.asarray(x_u8), *normalization)
  sample = levels if loop_levels is None else np.asarray(loop_levels)
  _loop(model, variables, layer, x, jnp.asarray(y), {"max_mag": orders["max_mag"]}, sample[:1])  # compile
  begin = time.perf_counter()
  loop_acc = _loop(model, variables, layer, x, jnp.asarray(y), orders, sample)
  loop_s = (time.perf_counter() - begin) * (len(levels) / len(sample))
  same = all(
    np.allclose(result[k]["accuracy"][sample], loop_acc[i], atol=1e-6) for i, k in enumerate(orders)
  )
  evaluations = len(orders) * len(levels)
  return [
    name, f"{m + 1} x {len(orders)}", len(y), f"{sweep_s:.3f}", f"{first:.2f}",
    f"{loop_s:.1f}" + ("" if loop_levels is None else f" (extrapolated from {len(sample)} levels)"),
    f"{loop_s / sweep_s:.0f}x", f"{evaluations / sweep_s:.0f}", "yes" if same else "NO",
  ]


def lenet_case():
  ds = data.load_bundled_mnist(0)
  x = np.concatenate([ds.test_x, ds.val_x])[:2000]
  y = np.concatenate([ds.test_y, ds.val_y])[:2000]
  model = create_model("lenet")
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  try:
    from redundancy_jax import checkpoint

    variables = checkpoint.load_trained("runs/lenet")
    print("using the trained LeNet in runs/lenet")
  except FileNotFoundError:
    print("no trained LeNet in runs/lenet: timing an initialised one (timing does not depend on training)")
  return bench_layer("lenet fc1", model, variables, "fc1", x, y, (ds.mean, ds.std))


def conv2_case():
  ds = data.random_images(seed=0, n_train=8, n_val=8, n_test=2000)
  model = create_model("conv2")
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  return bench_layer(
    "conv2 fc1", model, variables, "fc1", ds.test_x, ds.test_y, (ds.mean, ds.std), loop_levels=[0, 128, 256]
  )


def vgg_memory(n_images: int = 2000):
  """XLA's planned memory of the sweep pieces for every prunable VGG19 layer (compiled, not run)."""
  model = create_model("vgg19")
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  rows = []
  norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  for layer in prunable_layers(model):
    m = variables["params"][layer]["kernel"].shape[-1]
    orders = jnp.stack(list(_orders(variables, layer).values()))
    levels = jnp.arange(m + 1)
    nxt = pruning.next_layer(variables, layer)
    nested = model.plan[[l.name for l in model.plan].index(nxt)].kind == "dense"
    chunk = min(n_images, 2048 if nested else 250)  # the defaults of pruning.sweep
    xs = jnp.zeros((n_images // chunk, chunk, 32, 32, 3), jnp.uint8)
    ys = jnp.zeros((n_images // chunk, chunk), jnp.int32)
    head = jax.jit(lambda v, x: pruning._head(model, v, layer, x, norm))
    pieces = [compiled_memory_bytes(head, variables, xs[0])]
    h = jax.eval_shape(lambda v, x: pruning._head(model, v, layer, x, norm), variables, xs[0])
    h = jnp.zeros(h.shape, h.dtype)
    if nested:
      f = jax.jit(lambda v, h, y, o, l: pruning._sweep_nested(model, v, layer, nxt, h, y, o, l))
      pieces.append(compiled_memory_bytes(f, variables, h, ys[0], orders, levels))
    else:
      masks = jnp.ones((16, m), bool)
      f = jax.jit(lambda v, h, y, c: pruning._rest_for_masks(model, v, layer, h, y, c))
      pieces.append(compiled_memory_bytes(f, variables, h, ys[0], masks))
    whole = jax.jit(
      lambda v, xs, ys, o, l: pruning._forward_all(model, v, layer, nxt, xs, ys, o, l, norm, nested, 16)
    )
    rows.append([layer, m, "nested" if nested else "masks", f"{max(pieces) / 2**30:.2f}",
                 f"{compiled_memory_bytes(whole, variables, xs, ys, orders, levels) / 2**30:.2f}"])
  return rows


def main():
  print(f"devices: {jax.devices()}")
  flops = matmul_flops_per_second()
  print(f"matmul roofline (2048^2 float32, measured now): {flops / 1e9:.1f} GFLOP/s\n")
  header = ["layer", "levels x orders", "images", "sweep s (median)", "first call s (compile)", "loop s",
            "speed-up", "evaluations/s", "same accuracies"]
  rows = [lenet_case(), conv2_case()]
  print(table(rows, header))
  n = 2000
  lenet_flops = 2 * n * 784 * 300 + 2 * n * 300 * 100 + 9 * (n * 300 * 100 + 2 * 301 * n * 100 * 10)
  sweep_s = float(rows[0][3])
  print(f"\nLeNet fc1 sweep: {lenet_flops / 1e9:.2f} GFLOP (analytic) in {sweep_s:.3f} s = "
        f"{lenet_flops / sweep_s / 1e9:.1f} GFLOP/s, {lenet_flops / sweep_s / flops:.0%} of the matmul roofline")
  if "--skip_vgg" not in sys.argv:
    print("\nVGG19, every prunable layer, 2,000 images, all levels, 9 orders: XLA's planned memory (GiB)")
    print(table(vgg_memory(), ["layer", "units", "path", "largest compiled piece (CPU form)", "one program (accelerator form)"]))


if __name__ == "__main__":
  main()

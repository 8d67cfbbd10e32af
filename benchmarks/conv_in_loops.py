"""Why a convolution model's epoch on CPU runs as a Python loop and not as one `lax.scan` (issue 29): each
part of a 3x3 convolution's training step timed as one jitted call (the anchor) and inside a `lax.scan`
(ours, the scan form), side by side in one run, with the ratio.

  python -m benchmarks.conv_in_loops [--batch=64] [--size=32] [--channels=64] [--steps=2]

The parts: the forward convolution; the input gradient; the weight gradient by XLA's backward-filter
convolution (`REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT=xla`'s formulation) and by the nine shifted matmuls
(`matmul`), both through `models.conv.conv3x3`.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import app, flags

from benchmarks.common import record, table

flags.DEFINE_integer("batch", 64, "Images per step.", lower_bound=1)
flags.DEFINE_integer("size", 32, "Height and width of the maps.", lower_bound=3)
flags.DEFINE_integer("channels", 64, "Input and output channels.", lower_bound=1)
flags.DEFINE_integer("steps", 2, "Steps inside the scan (its time is per step).", lower_bound=1)
FLAGS = flags.FLAGS


def _seconds(f, *args, repeats: int = 1) -> float:
  f(*args).block_until_ready()
  begin = time.perf_counter()
  for _ in range(repeats):
    f(*args).block_until_ready()
  return (time.perf_counter() - begin) / repeats


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  from redundancy_jax.models import conv

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.channels)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, FLAGS.channels, FLAGS.channels)) * 0.05, jnp.float32)
  lax_conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=conv._NHWC)
  loss = lambda f: (lambda w, x: jnp.sum(f(x, w) ** 2))
  parts = {  # name: (step(w, x) -> the carried value, whether the scan carries x (else w))
    "forward": (lambda w, x: lax_conv(x, w) * 0.5, True),
    "input gradient (and forward)": (lambda w, x: x - 1e-6 * jax.grad(loss(lax_conv), argnums=1)(w, x), True),
  }
  for formulation in ("xla", "matmul"):
    def step(w, x, formulation=formulation):
      os.environ["REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT"] = formulation  # read when the step is traced
      return w - 1e-6 * jax.grad(loss(conv.conv3x3))(w, x)
    parts[f"weight gradient, {formulation} (and forward)"] = (step, False)
  rows, out = [], {}
  for name, (step, carries_x) in parts.items():
    one = jax.jit(step)
    if carries_x:
      scanned = jax.jit(lambda w, x, step=step: jax.lax.scan(lambda c, _: (step(w, c), None), x, None,
                                                             length=FLAGS.steps)[0])
    else:
      scanned = jax.jit(lambda w, x, step=step: jax.lax.scan(lambda c, _: (step(c, x), None), w, None,
                                                             length=FLAGS.steps)[0])
    outside = _seconds(one, w, x, repeats=3)
    inside = _seconds(scanned, w, x) / FLAGS.steps
    out[name] = {"outside_ms": 1000 * outside, "inside_scan_ms": 1000 * inside}
    rows.append([name, f"{1000 * outside:.1f}", f"{1000 * inside:.1f}", f"{inside / outside:.1f}x"])
  os.environ.pop("REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT", None)
  print(f"3x3 convolution, batch {FLAGS.batch}, {FLAGS.size}x{FLAGS.size}, {FLAGS.channels} -> {FLAGS.channels} "
        f"channels, on {jax.devices()[0].platform}: per step, one jitted call against inside a lax.scan")
  print(table(rows, ["part", "one jitted call ms (anchor)", "inside lax.scan ms (ours)", "ratio"]))
  record("conv_in_loops", {"batch": FLAGS.batch, "size": FLAGS.size, "channels": FLAGS.channels, "parts": out})


if __name__ == "__main__":
  import redundancy_jax  # noqa: F401  first: its XLA CPU options before JAX starts

  app.run(main)

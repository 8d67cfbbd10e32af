"""Timing helpers shared by the benchmarks: medians of repeated runs, the machine's matmul roofline,
XLA's FLOP and memory plans, and a Markdown table."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time of `fn()` (its result is waited for), after `warmup` untimed calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    begin = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - begin)
  return float(np.median(times))


def matmul_flops_per_second(n: int = 2048, repeats: int = 5) -> float:
  """The machine's float32 matmul throughput, measured now (the roofline the targets refer to)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  return 2 * n**3 / median_seconds(lambda: f(a, b), repeats)


def print_roofline() -> float:
  """Prints the devices and the matmul roofline measured now; returns the roofline in FLOP/s."""
  print(f"devices: {jax.devices()}")
  roof = matmul_flops_per_second()
  print(f"matmul roofline (2048^2 float32, measured now): {roof / 1e9:.1f} GFLOP/s\n")
  return roof


def compiled_flops(jitted, *args) -> float:
  """XLA's FLOP count for one call of a jitted function (0 when the backend does not report it)."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def lowered_memory_bytes(lowered) -> int:
  """Arguments + outputs + temporaries of a lowered program, as XLA plans it (peak device memory)."""
  m = lowered.compile().memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def compiled_memory_bytes(jitted, *args) -> int:
  """`lowered_memory_bytes` of one call of a jitted function."""
  return lowered_memory_bytes(jitted.lower(*args))


def table(rows: list[list], header: list[str]) -> str:
  """A Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)

"""Helpers shared by the benchmarks: medians of repeated runs, the machine's matmul roofline, XLA's FLOP
and memory plans, the timed training runs and removal orders, a Markdown table, and the results log
`benchmarks/results.jsonl` (one JSON line per benchmark run: machine, versions, commit, figures)."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.analyses import criteria, pruning, units
from redundancy_jax.core import config, data, steps, storage
from redundancy_jax.core.epochs import run_epoch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.jsonl")


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
  """Prints the CPU, the devices and the matmul roofline measured now; returns the roofline in FLOP/s."""
  m = machine()
  print(f"CPU: {m['cpu']} ({m['cores']} cores, AVX-512: {'yes' if m['avx512'] else 'no'}); devices: {jax.devices()}")
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


# ----------------------------------------------------------------------------- shared workloads


def training_run(model: str, n_train: int, *, width: float = 1.0, num_seeds: int = 1,
                 num_devices: int | None = None) -> tuple[steps.Setup, data.Dataset]:
  """`model`'s recipe (batch, optimizer) on `n_train` benchmark images, never validating nor stopping
  within the timing: LeNet on the bundled real MNIST, the CIFAR models on generated CIFAR-shaped images.
  `num_devices` as the training commands' option (default: every device; the seeds spread over them)."""
  if model == "lenet":
    ds = data.load_bundled_mnist(0)
    ds = dataclasses.replace(ds, train_x=ds.train_x[:n_train], train_y=ds.train_y[:n_train])
  else:
    ds = data.random_images(seed=0, n_train=n_train, n_val=64, n_test=64)
  cfg = config.TrainConfig(model=model, dataset=ds.name, steps=10**6, eval_every=10**6, width=width,
                           num_seeds=num_seeds, num_devices=num_devices, replica_devices=num_devices).resolve()
  return steps.make_setup(cfg, ds), ds


def seconds_per_step(setup: steps.Setup, ds: data.Dataset, loop: str, epochs: int) -> float:
  """Median seconds per step over `epochs` epochs of `run_epoch(loop=loop)`, after a compiling one."""
  train_data, val_split, _ = steps.device_data(setup, ds)
  state = steps.init_state(setup, ds.image_shape)
  state, metrics, _ = run_epoch(setup, state, train_data, val_split, loop)
  jax.block_until_ready((state, metrics))
  times = []
  for _ in range(epochs):
    begin = time.perf_counter()
    state, metrics, _ = run_epoch(setup, state, train_data, val_split, loop)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - begin) / setup.steps_per_epoch)
  return float(np.median(times))


def removal_orders(variables, layer: str) -> dict[str, np.ndarray]:
  """The 4 deterministic orders and 5 random ones of a layer (the sweeps' 9 orders)."""
  W = units.unit_matrix(variables, layer)
  orders = {c: pruning.removal_order(W, c) for c in criteria.REPORT_DETERMINISTIC}
  for i, k in enumerate(jax.random.split(jax.random.key(0), 5)):
    orders[f"random/{i}"] = pruning.removal_order(W, "random", key=k)
  return orders


# ----------------------------------------------------------------------------- the results log


def machine() -> dict:
  """Where and with what a benchmark ran."""
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(RESULTS)).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
  except OSError:
    pass
  try:
    import torch  # the anchors' version, where the `.[bench]` extra is installed
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  from redundancy_jax.models import conv

  return {"host": platform.node(), "cpu": cpu, "avx512": conv.has_avx512(), "cores": os.cpu_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "conv": conv.conv_choice() or "rule",
          "ld_preload": os.environ.get("LD_PRELOAD", ""),
          "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
          "jax": jax.__version__, "torch": torch_version, "python": platform.python_version(), "commit": commit}


def record(benchmark: str, figures: dict, path: str = RESULTS) -> dict:
  """Appends one line {benchmark, time, machine, figures} to the results log; returns it."""
  line = {"benchmark": benchmark, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(),
          "figures": figures}
  storage.append_jsonl(path, line)
  print(f"\nappended to {path}")
  return line


def write_outputs(stem: str, payload: dict, markdown: str) -> list[str]:
  """`stem`.json and `stem`.md, written atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  storage.write_json(stem + ".json", payload)
  storage.atomic_write(stem + ".md", lambda f: f.write(markdown.encode("utf-8")))
  return [stem + ".json", stem + ".md"]

"""Training throughput of every model at its recipe batch size, against the machine's matmul roofline.

  python -m benchmarks.train_throughput [--models=lenet,conv2,...]

For each model: steps/s of the epoch form the trainer uses on this backend, XLA's FLOPs per step,
achieved FLOP/s and its fraction of the matmul FLOP/s measured in the same run. Also, side by side,
the compiled-scan epoch against a plain one-step-per-call Python loop (the dispatch cost), for LeNet
and Conv-2. LeNet uses the bundled real MNIST; the CIFAR models use generated CIFAR-shaped images.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from benchmarks.common import compiled_flops, matmul_flops_per_second, table
from redundancy_jax import data, train
from redundancy_jax.models import MODELS

_TRAIN_IMAGES = {"lenet": 8000, "conv2": 640, "conv4": 600, "conv6": 600, "vgg19": 256}


def _trainer(model: str, loop: str) -> train.Trainer:
  if model == "lenet":
    ds = data.load_bundled_mnist(0)
  else:
    ds = data.random_images(seed=0, n_train=_TRAIN_IMAGES[model], n_val=64, n_test=64)
  cfg = train.TrainConfig(model=model, dataset=ds.name, steps=10**6, eval_every=10**6).resolve()
  return train.Trainer(cfg, ds, loop=loop)


def seconds_per_step(trainer: train.Trainer, epochs: int = 3) -> float:
  state = trainer.init_state()
  state, _ = trainer.run_epoch(state)  # compiles
  jax.block_until_ready(state)
  times = []
  for _ in range(epochs):
    begin = time.perf_counter()
    state, metrics = trainer.run_epoch(state)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - begin) / trainer.steps_per_epoch)
  return float(np.median(times))


def step_flops(trainer: train.Trainer) -> float:
  state = trainer.init_state()
  idx = trainer._epoch_indices(state["epoch"])[0]
  return compiled_flops(jax.jit(trainer._step), state, idx, trainer.train_data)


def main():
  models = MODELS
  for arg in sys.argv[1:]:
    if arg.startswith("--models="):
      models = tuple(arg.split("=", 1)[1].split(","))
  print(f"devices: {jax.devices()}")
  roof = matmul_flops_per_second()
  print(f"matmul roofline (2048^2 float32, measured now): {roof / 1e9:.1f} GFLOP/s\n")
  rows = []
  for model in models:
    trainer = _trainer(model, "auto")
    per_step = seconds_per_step(trainer, epochs=2 if model == "vgg19" else 3)
    flops = step_flops(trainer)
    rows.append([
      model, trainer.cfg.batch_size, "python loop" if trainer.python_loop else "lax.scan",
      f"{1 / per_step:.1f}", f"{trainer.cfg.batch_size / per_step:.0f}", f"{flops / 1e9:.3f}",
      f"{flops / per_step / 1e9:.1f}", f"{flops / per_step / roof:.0%}",
    ])
    print(rows[-1], flush=True)
  print()
  print(table(rows, ["model", "batch", "epoch form", "steps/s", "images/s", "GFLOP/step", "GFLOP/s", "of matmul roofline"]))
  print("\nDispatch: one compiled scan per epoch against one jitted call per step (same model, same data)")
  rows = []
  for model in [m for m in ("lenet", "conv2") if m in models]:
    scan = seconds_per_step(_trainer(model, "scan"))
    loop = seconds_per_step(_trainer(model, "python"))
    rows.append([model, f"{1 / scan:.1f}", f"{1 / loop:.1f}", f"{loop / scan:.2f}"])
  print(table(rows, ["model", "scan steps/s", "python-loop steps/s", "scan speed-up"]))


if __name__ == "__main__":
  main()

"""Training throughput of each model at its recipe batch size, against PyTorch eager in the same run.

  python -m benchmarks.train_throughput [--models=lenet,conv2,conv4,conv6] [--seeds=10] [--rounds=5] [--dispatch]

For each model: steps/s of the epoch form `epochs.run_epoch` picks on this backend, XLA's FLOPs per
`steps.train_step`, achieved FLOP/s and its fraction of the matmul FLOP/s measured in the same run. The
anchor is PyTorch eager training of the same model (LeNet, Conv-2, Conv-6) at the same batch with the
same optimizer and data (`benchmarks/torch_anchor.py`; conv nets in both memory formats, the faster one
quoted). Ours and the anchor are timed in alternating rounds (`--rounds`, medians), so that a change of
load on a shared machine hits both. `--seeds=K` adds LeNet with K seeds: ours as K vmapped replicas on
one device, and on CPU spread over `--cpu_devices` devices of this process (default: one per core; as the
training commands' `--cpu_devices`; one replica per device at a time, `epochs.waves`), against PyTorch
training them one after another, as a `torch.func` ensemble, and as one single-threaded process per core,
each training its own seed (replica-steps/s).
Every other figure runs on one device.
VGG19 is opt-in (`--models=...,vgg19`). `--dispatch` adds the compiled-scan epoch against one jitted call
per step for LeNet and Conv-2. LeNet uses the bundled real MNIST; the conv nets generated CIFAR-shaped
images. The CPU model and its AVX-512 flag are printed and logged in benchmarks/results.jsonl, with the
convolutions ours used: the rule of `models/conv.py`, or oneDNN's with `REDUNDANCY_JAX_CONV=onednn` in the
environment (`models/onednn.py`).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import torch_anchor
from benchmarks.common import RESULTS, compiled_flops, print_roofline, record, seconds_per_step, table, training_run
from redundancy_jax.core import data, epochs, steps
from redundancy_jax.models import MODELS, conv

_TIMED = tuple(m for m in MODELS if m != "mlp")  # the report's models
flags.DEFINE_list("models", ["lenet", "conv2", "conv4", "conv6"], f"Models to time, of {', '.join(_TIMED)}.")
flags.DEFINE_integer("epochs", 3, "Timed epochs per model, after a compiling one (median reported).", lower_bound=1)
flags.DEFINE_bool("dispatch", False, "Also time scan against Python-loop epochs for lenet and conv2 (slow on CPU).")
flags.DEFINE_integer("rounds", 5, "Alternating rounds of ours and the anchor (medians reported).", lower_bound=1)
flags.DEFINE_integer("seeds", 10, "LeNet seeds for the multi-seed comparison (0: skip it).", lower_bound=0)
flags.DEFINE_integer("cpu_devices", len(os.sched_getaffinity(0)),
                     "CPU devices the --seeds comparison also spreads ours over, and PyTorch processes of one "
                     "thread each it runs side by side (default: the cores; 1: neither).", lower_bound=1)
flags.DEFINE_string("results", RESULTS, "The results log a line is appended to.")
flags.register_validator(
  "models", lambda names: set(names) <= set(_TIMED), f"--models takes names of {', '.join(_TIMED)}"
)
FLAGS = flags.FLAGS

_TRAIN_IMAGES = {"lenet": 8000, "conv2": 640, "conv4": 600, "conv6": 600, "vgg19": 256}


def make_run(model: str) -> tuple[steps.Setup, data.Dataset]:
  """The model's recipe on its benchmark data."""
  return training_run(model, _TRAIN_IMAGES[model], num_devices=1)


def step_flops(setup: steps.Setup, ds: data.Dataset) -> float:
  """XLA's FLOP count of one `steps.train_step`, traced with XLA's convolutions: oneDNN's
  (`REDUNDANCY_JAX_CONV=onednn`) are FFI calls, which XLA counts as none; the arithmetic is the same."""
  train_data, _, _ = steps.device_data(setup, ds)
  state = steps.init_state(setup, ds.image_shape)
  idx_KxB = steps.epoch_indices(setup, state.epoch)[0]
  count = lambda: compiled_flops(jax.jit(steps.train_step, static_argnames="setup"), setup, state, idx_KxB, train_data)
  if conv.conv_choice() != "onednn":
    return count()
  choice = os.environ.pop("REDUNDANCY_JAX_CONV")
  jax.clear_caches()  # nothing traced under one formulation is reused under the other
  try:
    return count()
  finally:
    os.environ["REDUNDANCY_JAX_CONV"] = choice
    jax.clear_caches()


def _ours(setup: steps.Setup, ds: data.Dataset):
  """A generator of seconds per step, one value per epoch, after a compiling epoch."""
  train_data, val_split, _ = steps.device_data(setup, ds)
  state = steps.init_state(setup, ds.image_shape)
  state, metrics, _ = epochs.run_epoch(setup, state, train_data, val_split)
  jax.block_until_ready((state, metrics))
  while True:
    begin = time.perf_counter()
    state, metrics, _ = epochs.run_epoch(setup, state, train_data, val_split)
    jax.block_until_ready((state, metrics))
    yield (time.perf_counter() - begin) / setup.steps_per_epoch


def _anchors(model: str, ds: data.Dataset) -> dict:
  """{name: callable returning PyTorch steps/s} of the forms timed for `model` (none without torch)."""
  if model not in torch_anchor.ANCHORED or torch_anchor.torch_or_none() is None:
    return {}
  if model == "lenet":
    return {"PyTorch eager": lambda: torch_anchor.train_steps_per_second(model, ds, repeats=1)}
  return {"PyTorch eager (NCHW)": lambda: torch_anchor.train_steps_per_second(model, ds, steps=10, repeats=1),
          "PyTorch eager (channels_last)": lambda: torch_anchor.train_steps_per_second(
            model, ds, steps=10, repeats=1, channels_last=True)}


def timed_rounds(ours, anchors: dict, rounds: int) -> tuple[float, dict]:
  """Median steps/s of ours and of every anchor, timed in alternating rounds."""
  mine, theirs = [], {name: [] for name in anchors}
  for _ in range(rounds):
    mine.append(1 / next(ours))
    for name, run in anchors.items():
      theirs[name].append(run())
  return float(np.median(mine)), {name: float(np.median(v)) for name, v in theirs.items()}


def main(argv):
  del argv
  jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)  # before JAX starts its backend
  roof = print_roofline()
  print(f"convolutions: {conv.conv_choice() or 'the rule of models/conv.py'} (REDUNDANCY_JAX_CONV)")
  rows, figures = [], []
  for model in FLAGS.models:
    setup, ds = make_run(model)
    ours, theirs = timed_rounds(_ours(setup, ds), _anchors(model, ds), FLAGS.rounds)
    flops = step_flops(setup, ds)
    batch = setup.cfg.batch_size
    best = max(theirs, key=theirs.get) if theirs else None
    form = epochs.epoch_form(setup)
    figures.append({"model": model, "batch": batch, "epoch_form": form, "steps_per_s": ours,
                    "gflop_per_step": flops / 1e9, "roofline_fraction": flops * ours / roof, "anchors": theirs,
                    "anchor": best, "anchor_steps_per_s": theirs.get(best), "ratio": ours / theirs[best] if best else None})
    rows.append([model, batch, form, f"{ours:.1f}", f"{batch * ours:.0f}", f"{flops / 1e9:.3f}",
                 f"{flops * ours / 1e9:.1f}", f"{flops * ours / roof:.0%}",
                 "; ".join(f"{n}: {v:.1f}" for n, v in theirs.items()) or "-",
                 f"{ours / theirs[best]:.2f}x" if best else "-"])
    print(rows[-1], flush=True)
  multi = seeds_comparison(FLAGS.seeds, FLAGS.rounds) if FLAGS.seeds and "lenet" in FLAGS.models else None
  print()
  header = ["model", "batch", "epoch form", "steps/s", "images/s", "GFLOP/step", "GFLOP/s", "of matmul roofline",
            "anchor steps/s (median)", "ours / best anchor"]
  print(table(rows, header))
  if multi:
    print(f"\nLeNet with {FLAGS.seeds} seeds, replica-steps/s (median of {FLAGS.rounds} rounds):")
    print(table([[f"{multi[k]:.0f}" if multi.get(k) else "-" for k in SEED_FORMS]
                 + [f"{multi[k]:.2f}x" if multi.get(k) else "-" for k in ("ratio", "ratio_spread", "ratio_spread_named")]],
                [*SEED_FORMS.values(), "ours / best PyTorch", "ours spread / best PyTorch",
                 "ours spread / better of sequential, ensemble"]))
  if torch_anchor.torch_or_none() is None:
    print(f"\n{torch_anchor.MISSING}")
  dispatch = []
  if FLAGS.dispatch:
    print("\nDispatch: one compiled scan per epoch against one jitted call per step (same model, same data)")
    for model in [m for m in ("lenet", "conv2") if m in FLAGS.models]:
      setup, ds = make_run(model)
      scan = seconds_per_step(setup, ds, "scan", 2)
      loop = seconds_per_step(setup, ds, "python", 2)
      dispatch.append([model, f"{1 / scan:.1f}", f"{1 / loop:.1f}", f"{loop / scan:.2f}"])
    print(table(dispatch, ["model", "scan steps/s", "python-loop steps/s", "scan speed-up"]))
  record("train_throughput", {"roofline_gflops": roof / 1e9, "rounds": FLAGS.rounds, "models": figures,
                              "seeds": multi, "dispatch": dispatch}, FLAGS.results)


SEED_FORMS = {"ours": "ours (vmapped replicas, one device)",
              "spread": "ours over --cpu_devices CPU devices (in waves, one replica per device)",
              "sequential": "PyTorch, one after another", "ensemble": "PyTorch torch.func ensemble",
              "processes": "PyTorch, one 1-thread process per CPU device"}


def seeds_comparison(seeds: int, rounds: int) -> dict:
  """LeNet with `seeds` seeds in replica-steps/s: ours as one vmapped program on one device and (on CPU,
  over the most of the `--cpu_devices` CPU devices that divide the seeds, if more than one) spread over them, against PyTorch one seed after
  another (its single-model steps/s is its replica-steps/s), as a torch.func ensemble and as one
  single-threaded process per CPU device. Forms that do not apply are None."""
  setup, ds = training_run("lenet", _TRAIN_IMAGES["lenet"], num_seeds=seeds, num_devices=1)
  devices = max(d for d in range(1, FLAGS.cpu_devices + 1) if seeds % d == 0) if jax.default_backend() == "cpu" else 1
  forms = {}
  if devices > 1:
    spread = _ours(*training_run("lenet", _TRAIN_IMAGES["lenet"], num_seeds=seeds, num_devices=devices))
    forms["spread"] = lambda: 1 / next(spread)
  if torch_anchor.torch_or_none() is not None:
    forms["sequential"] = lambda: torch_anchor.train_steps_per_second("lenet", ds, repeats=1)
    forms["ensemble"] = lambda: torch_anchor.ensemble_steps_per_second("lenet", ds, seeds, repeats=1)
    if FLAGS.cpu_devices > 1:
      forms["processes"] = lambda: torch_anchor.processes_steps_per_second("lenet", ds, FLAGS.cpu_devices, repeats=1)
  ours, timed = timed_rounds(_ours(setup, ds), forms, rounds)
  out = {"seeds": seeds, "cpu_devices": devices, **{k: None for k in SEED_FORMS}, **timed, "ours": seeds * ours}
  if out["spread"]:
    out["spread"] *= seeds
  theirs = [out[k] for k in ("sequential", "ensemble", "processes") if out[k]]
  out["ratio"] = out["ours"] / max(theirs) if theirs else None
  out["ratio_spread"] = out["spread"] / max(theirs) if theirs and out["spread"] else None
  named = [out[k] for k in ("sequential", "ensemble") if out[k]]  # the forms issue 29's 2x target names
  out["ratio_spread_named"] = out["spread"] / max(named) if named and out["spread"] else None
  return out


if __name__ == "__main__":
  app.run(main)

"""Training throughput of each model at its recipe batch size, against the machine's matmul roofline.

  python -m benchmarks.train_throughput [--models=lenet,conv2,conv4,conv6] [--epochs=3] [--dispatch]

For each model: steps/s of the epoch form `steps.run_epoch` picks on this backend (the median of
`--epochs` epochs after a compiling one), XLA's FLOPs per `steps.train_step`, achieved FLOP/s and its
fraction of the matmul FLOP/s measured in the same run. VGG19 is opt-in (`--models=...,vgg19`: minutes
per epoch on 2 CPU cores). `--dispatch` adds, side by side, the compiled-scan epoch against one jitted
call per step from Python (the dispatch cost) for LeNet and Conv-2 (Conv-2's scan epoch takes minutes on
CPU). LeNet uses the bundled real MNIST; the CIFAR models use generated CIFAR-shaped images.

The anchor, timed in the same run: PyTorch eager training of the same model (LeNet, Conv-2) at the same
batch with the same optimizer and data (`benchmarks/torch_anchor.py`; Conv-2 in both memory formats, the
faster one quoted); needs the `.[bench]` extra. The figures are appended to benchmarks/results.jsonl.
"""

from __future__ import annotations

import jax
from absl import app, flags

from benchmarks import torch_anchor
from benchmarks.common import compiled_flops, print_roofline, record, seconds_per_step, table, training_run
from redundancy_jax.core import data, steps, variants
from redundancy_jax.models import MODELS

_TIMED = tuple(m for m in MODELS if m != "mlp")  # the report's models
flags.DEFINE_list("models", ["lenet", "conv2", "conv4", "conv6"], f"Models to time, of {', '.join(_TIMED)}.")
flags.DEFINE_integer("epochs", 3, "Timed epochs per model, after a compiling one (median reported).", lower_bound=1)
flags.DEFINE_bool("dispatch", False, "Also time scan against Python-loop epochs for lenet and conv2 (slow on CPU).")
flags.register_validator(
  "models", lambda names: set(names) <= set(_TIMED), f"--models takes names of {', '.join(_TIMED)}"
)
FLAGS = flags.FLAGS

_TRAIN_IMAGES = {"lenet": 8000, "conv2": 640, "conv4": 600, "conv6": 600, "vgg19": 256}


def make_run(model: str) -> tuple[steps.Setup, data.Dataset]:
  """The model's recipe on its benchmark data."""
  return training_run(model, _TRAIN_IMAGES[model])


def step_flops(setup: steps.Setup, ds: data.Dataset) -> float:
  """XLA's FLOP count of one `steps.train_step`."""
  train_data, _, _ = steps.device_data(setup, ds)
  state = steps.init_state(setup, ds.image_shape)
  idx_KxB = steps.epoch_indices(setup, state.epoch)[0]
  return compiled_flops(jax.jit(steps.train_step, static_argnames="setup"), setup, state, idx_KxB, train_data)


def anchor(model: str, ds: data.Dataset) -> tuple[float | None, str]:
  """PyTorch eager steps/s of `model` on the same data, and how it was run ('' when there is none)."""
  if model not in ("lenet", "conv2") or torch_anchor.torch_or_none() is None:
    return None, ""
  if model == "lenet":
    return torch_anchor.train_steps_per_second(model, ds), "PyTorch eager"
  nchw = torch_anchor.train_steps_per_second(model, ds, steps=10)
  last = torch_anchor.train_steps_per_second(model, ds, steps=10, channels_last=True)
  return max(nchw, last), f"PyTorch eager ({'channels_last' if last > nchw else 'NCHW'})"


def main(argv):
  del argv
  roof = print_roofline()
  rows, figures = [], []
  for model in FLAGS.models:
    setup, ds = make_run(model)
    per_step = seconds_per_step(setup, ds, "auto", FLAGS.epochs)
    flops = step_flops(setup, ds)
    batch = setup.cfg.batch_size
    theirs, how = anchor(model, ds)
    form = "python loop" if variants.host_loop(setup.model) else "lax.scan"
    figures.append({"model": model, "batch": batch, "epoch_form": form, "steps_per_s": 1 / per_step,
                    "gflop_per_step": flops / 1e9, "roofline_fraction": flops / per_step / roof,
                    "anchor": how or None, "anchor_steps_per_s": theirs})
    rows.append([
      model, batch, form, f"{1 / per_step:.1f}", f"{batch / per_step:.0f}", f"{flops / 1e9:.3f}",
      f"{flops / per_step / 1e9:.1f}", f"{flops / per_step / roof:.0%}",
      "-" if theirs is None else f"{theirs:.1f} ({how})", "-" if theirs is None else f"{1 / per_step / theirs:.2f}x",
    ])
    print(rows[-1], flush=True)
  print()
  header = ["model", "batch", "epoch form", "steps/s", "images/s", "GFLOP/step", "GFLOP/s", "of matmul roofline",
            "anchor steps/s", "ours / anchor"]
  print(table(rows, header))
  if torch_anchor.torch_or_none() is None:
    print(f"\n{torch_anchor.MISSING}")
  dispatch = []
  if FLAGS.dispatch:
    print("\nDispatch: one compiled scan per epoch against one jitted call per step (same model, same data)")
    for model in [m for m in ("lenet", "conv2") if m in FLAGS.models]:
      setup, ds = make_run(model)
      scan = seconds_per_step(setup, ds, "scan", FLAGS.epochs)
      loop = seconds_per_step(setup, ds, "python", FLAGS.epochs)
      dispatch.append([model, f"{1 / scan:.1f}", f"{1 / loop:.1f}", f"{loop / scan:.2f}"])
    print(table(dispatch, ["model", "scan steps/s", "python-loop steps/s", "scan speed-up"]))
  record("train_throughput", {"roofline_gflops": roof / 1e9, "epochs": FLAGS.epochs, "models": figures,
                              "dispatch": dispatch})


if __name__ == "__main__":
  app.run(main)

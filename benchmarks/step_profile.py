"""Where one training step's time goes on CPU: ours part by part, beside PyTorch's profile of the same step.

  python -m benchmarks.step_profile [--models=lenet,conv2,conv6] [--lenet_seeds=10] [--repeats=20]

For each model at its recipe batch (LeNet on the bundled real MNIST, the conv nets on generated 32x32x3
images, as `benchmarks.train_throughput`), and LeNet again with `--lenet_seeds` replicas:
- ours: the whole step as it trains (the epoch form `epochs.run_epoch` picks on this backend, median per
  step over `--epochs`), and each part of it compiled and timed alone (median of `--repeats`), in the
  formulation the model uses (`models/conv.py`), vmapped over the replicas as the step is: the batch
  gathered and standardised; each convolution's forward (with bias and ReLU), input gradient and weight
  gradient; each dense layer's forward, input gradient and weight gradient (no input gradient for the
  first layer: the step never computes the images'); ReLU and bias backward; each
  pool forward and backward; the loss forward and backward; the optimizer's update. The parts' sum
  against the step leaves what fusion, dispatch and the step's bookkeeping (keys, metrics, the best
  parameters) cost or save as its own row, so that every millisecond of the step is in the table.
- PyTorch eager (`benchmarks/torch_anchor.py`; the conv nets NCHW and channels_last, the faster profiled):
  `torch.profiler`'s self CPU time of every operator over `--steps` steps, assigned to the same rows by
  the nearest layer operation, autograd node or named region up its call tree (its convolution backward
  computes both gradients in one operator); one replica only.
Prints the CPU model and its AVX-512 flag; appends to benchmarks/results.jsonl.
"""

from __future__ import annotations

import collections
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks import torch_anchor
from benchmarks.common import machine, median_seconds, record, seconds_per_step, table, training_run
from redundancy_jax.models import common, conv, convnets
from redundancy_jax.models.lenet import lenet

flags.DEFINE_list("models", ["lenet", "conv2", "conv6"], "Models to profile, of lenet, conv2, conv6.")
flags.DEFINE_integer("lenet_seeds", 10, "Also LeNet with this many vmapped replicas (0 or 1: not).", lower_bound=0)
flags.DEFINE_integer("repeats", 20, "Timed runs per part (median).", lower_bound=1)
flags.DEFINE_integer("epochs", 3, "Timed epochs of our whole step (median).", lower_bound=1)
flags.DEFINE_integer("steps", 10, "PyTorch steps profiled (after as many warm-up steps).", lower_bound=1)
flags.register_validator("models", lambda names: set(names) <= {"lenet", "conv2", "conv6"},
                         "--models takes lenet, conv2, conv6")
FLAGS = flags.FLAGS

ROWS = ("batch gather and standardise", "conv forward", "conv backward", "dense forward", "dense backward",
        "ReLU, bias and pool", "loss", "optimizer")
_IMAGES = {"lenet": 8000, "conv2": 640, "conv6": 600}  # training images of the benchmark data
_PLANS = {"lenet": lenet, "conv2": convnets.conv2, "conv6": convnets.conv6}


def our_parts(model: str, seeds: int, batch: int, images: np.ndarray, mean, std, tx, repeats: int = 20,
              width: float = 1.0) -> list[tuple[str, str, float]]:
  """[(row, part, ms)] of every part of `model`'s training step for `seeds` replicas (vmapped), each
  compiled and timed alone on random values of the step's shapes."""
  parts, keys = [], iter(jax.random.split(jax.random.key(0), 64))
  over = (lambda f: f) if seeds == 1 else jax.vmap
  rand = lambda *shape, scale=1.0: scale * jax.random.normal(next(keys), ((seeds,) if seeds > 1 else ()) + shape)

  def timed(row, part, fn, *args):
    f = jax.jit(over(fn))
    parts.append((row, part, 1e3 * median_seconds(lambda: jax.block_until_ready(f(*args)), repeats)))
    return over(fn)(*args)

  idx = jnp.arange(seeds * batch).reshape((seeds, batch) if seeds > 1 else (batch,)) % len(images)
  gather = lambda i: (jnp.asarray(images)[i].astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / jnp.asarray(std)
  x = timed(ROWS[0], f"{batch} images", gather, idx)
  params = []
  for i, layer in enumerate(_PLANS[model](width=width).plan):
    if layer.before == "flatten":
      x = x.reshape(x.shape[: x.ndim - 3] + (-1,))
    act = (lambda v: v) if layer.output else jax.nn.relu
    if layer.kind == "conv":
      c, side = x.shape[-1], x.shape[-2]
      w, b = rand(3, 3, c, layer.features, scale=0.05), rand(layer.features, scale=0.0)
      g = rand(batch, side, side, layer.features)
      name = f"{layer.name} {side}x{side} {c}->{layer.features}"
      y = timed("conv forward", name, lambda x, w, b: act(conv._forward(x, w) + b), x, w, b)
      if i > 0:  # the first layer's input gradient (the images') is never computed
        timed("conv backward", f"{name} input gradient", conv._input_gradient, x, w, g)
      timed("conv backward", f"{name} weight gradient", lambda x, g, w: conv._weight_gradient(x, g, w.shape), x, g, w)
    else:
      w, b = rand(x.shape[-1], layer.features, scale=0.01), rand(layer.features, scale=0.0)
      g = rand(batch, layer.features)
      name = f"{layer.name} {x.shape[-1]}->{layer.features}"
      y = timed("dense forward", name, lambda x, w, b: act(x @ w + b), x, w, b)
      if i > 0:
        timed("dense backward", f"{name} input gradient", lambda g, w: g @ w.T, g, w)
      timed("dense backward", f"{name} weight gradient", lambda x, g: x.T @ g, x, g)
    params += [w, b]
    if not layer.output:
      timed(ROWS[5], f"{layer.name} ReLU and bias backward",
            lambda y, g: (lambda d: (d, d.sum(tuple(range(d.ndim - 1)))))(jnp.where(y > 0, g, 0)), y, g)
    if layer.after == "pool":
      pooled = timed(ROWS[5], f"pool after {layer.name} forward", common.max_pool, y)
      timed(ROWS[5], f"pool after {layer.name} backward", lambda y, g: jax.vjp(common.max_pool, y)[1](g)[0], y,
            jnp.ones_like(pooled))
      y = pooled
    x = y
  labels = jnp.arange(batch) % x.shape[-1]
  loss = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  timed("loss", "softmax cross-entropy forward and backward", jax.value_and_grad(loss), x)
  grads = [jnp.full_like(p, 1e-3) for p in params]
  state = jax.vmap(tx.init)(params) if seeds > 1 else tx.init(params)

  def update(p, g, s):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  timed("optimizer", f"{len(params)} tensors", update, params, grads, state)
  return parts


TORCH_ROWS = {  # PyTorch operators, autograd nodes and named regions -> our rows (the nearest one up the call tree)
  "batch": ROWS[0], "standardise": ROWS[0],
  "aten::conv2d": "conv forward", "aten::convolution": "conv forward", "aten::mkldnn_convolution": "conv forward",
  "ConvolutionBackward0": "conv backward", "aten::convolution_backward": "conv backward",
  "aten::linear": "dense forward", "aten::addmm": "dense forward",
  "AddmmBackward0": "dense backward", "TBackward0": "dense backward", "MmBackward0": "dense backward",
  "aten::relu": ROWS[5], "ReluBackward0": ROWS[5], "aten::max_pool2d": ROWS[5], "MaxPool2DWithIndicesBackward0": ROWS[5],
  "aten::flatten": ROWS[5], "ViewBackward0": ROWS[5], "ReshapeAliasBackward0": ROWS[5], "UnsafeViewBackward0": ROWS[5],
  "aten::cross_entropy_loss": "loss", "NllLossBackward0": "loss", "LogSoftmaxBackward0": "loss",
}
_NODE = "autograd::engine::evaluate_function: "


def _torch_row(event) -> str:
  """The row of a profiled event: the first of it and its callers that names one (the optimizer's step and
  zero_grad by their prefix), else "other operators"."""
  while event is not None:
    name = event.name.removeprefix(_NODE)
    if name.startswith("Optimizer."):
      return "optimizer"
    if name in TORCH_ROWS:
      return TORCH_ROWS[name]
    event = event.cpu_parent
  return "other operators"


def torch_profile(model: str, ds, channels_last: bool, steps: int) -> tuple[float, dict[str, float], dict]:
  """(ms per step, {row: ms per step}, {operator: ms per step}) of PyTorch's step under torch.profiler."""
  import torch

  run = torch_anchor.training_loop(model, ds, channels_last=channels_last)
  run(steps)  # warm-up
  begin = time.perf_counter()
  run(steps)
  wall = 1e3 * (time.perf_counter() - begin) / steps
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    run(steps)
  ops = {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages() if e.self_cpu_time_total > 0}
  rows = collections.defaultdict(float)
  for event in prof.events():
    rows[_torch_row(event)] += event.self_cpu_time_total / 1e3 / steps
  return wall, dict(rows), ops


def profile_model(model: str, seeds: int) -> dict:
  setup, ds = training_run(model, _IMAGES[model], num_seeds=seeds)
  step_ms = 1e3 * seconds_per_step(setup, ds, "auto", FLAGS.epochs)
  parts = our_parts(model, seeds, setup.cfg.batch_size, ds.train_x, ds.mean, ds.std, setup.tx, FLAGS.repeats)
  rows = collections.defaultdict(float)
  for row, _, ms in parts:
    rows[row] += ms
  anchor = None
  if torch_anchor.torch_or_none() is not None and seeds == 1:
    layouts = ("NCHW",) if model == "lenet" else ("NCHW", "channels_last")
    forms = {layout: torch_profile(model, ds, layout == "channels_last", FLAGS.steps) for layout in layouts}
    layout = min(forms, key=lambda k: forms[k][0])
    wall, theirs, ops = forms[layout]
    anchor = {"layout": layout, "step_ms": wall, "rows": theirs,
              "top_ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:10]),
              "other_layouts_step_ms": {k: v[0] for k, v in forms.items() if k != layout}}
  return {"model": model, "seeds": seeds, "batch": setup.cfg.batch_size, "step_ms": step_ms, "parts": parts,
          "rows": dict(rows), "anchor": anchor}


def main(argv):
  del argv
  m = machine()
  print(f"CPU: {m['cpu']} ({m['cores']} cores, AVX-512: {'yes' if m['avx512'] else 'no'}); "
        f"conv weight gradient: {conv.weight_gradient_formulation()}")
  runs = [(model, 1) for model in FLAGS.models]
  if FLAGS.lenet_seeds > 1 and "lenet" in FLAGS.models:
    runs.append(("lenet", FLAGS.lenet_seeds))
  results = []
  for model, seeds in runs:
    r = profile_model(model, seeds)
    results.append(r)
    a = r["anchor"]
    print(f"\n{model}" + (f" with {seeds} vmapped replicas" if seeds > 1 else "") +
          f", batch {r['batch']}: ours {r['step_ms']:.2f} ms per step" +
          (f" ({r['step_ms'] / seeds:.3f} per replica)" if seeds > 1 else "") +
          (f"; PyTorch eager ({a['layout']}) {a['step_ms']:.2f} ms; ours / PyTorch speed "
           f"{a['step_ms'] / r['step_ms']:.2f}x" if a else ""))
    print(table([[row, part, f"{ms:.3f}"] for row, part, ms in r["parts"]], ["row", "part (ours, alone)", "ms"]))
    ours_sum, theirs_sum = sum(r["rows"].values()), sum(a["rows"].values()) if a else None
    cell = lambda v: f"{v:.2f}" if v is not None else "-"
    lines = [[row, cell(r["rows"].get(row, 0.0)), cell(a["rows"].get(row, 0.0) if a else None)] for row in ROWS]
    lines += [["other operators (PyTorch)", "-", cell(a["rows"].get("other operators", 0.0) if a else None)],
              ["sum of the rows", cell(ours_sum), cell(theirs_sum)],
              ["step - sum (ours: fusion, dispatch, bookkeeping; PyTorch: outside operators)",
               cell(r["step_ms"] - ours_sum), cell(a["step_ms"] - theirs_sum if a else None)],
              ["the whole step", cell(r["step_ms"]), cell(a["step_ms"] if a else None)]]
    print(table(lines, ["row", "ours ms", "PyTorch ms"]))
    if a:
      print("PyTorch's largest operators (self CPU ms per step): " +
            ", ".join(f"{op} {ms:.2f}" for op, ms in a["top_ops"].items()))
  if torch_anchor.torch_or_none() is None:
    print(f"\n{torch_anchor.MISSING}")
  record("step_profile", {"runs": results})


if __name__ == "__main__":
  app.run(main)

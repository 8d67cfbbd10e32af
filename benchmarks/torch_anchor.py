"""PyTorch eager versions of the benchmarked work: the anchors our figures are compared with in the same
run. The same models (LeNet-300-100, Conv-2, Conv-6), batch, optimizer and data; several seeds trained one
after another and as a `torch.func` ensemble; the sweep as the loop a user writes. Torch is the optional benchmark extra (`pip install -e ".[bench]"`), never a dependency of the
library: without it the benchmarks print our figures and say the anchor is missing.
"""

from __future__ import annotations

import os
import time

import numpy as np

from redundancy_jax.core import config, data
from redundancy_jax.models import create_model, topology

MISSING = "PyTorch is not installed (pip install -e \".[bench]\"): no anchor"
ANCHORED = ("lenet", "conv2", "conv6")


def torch_or_none():
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  return torch


def _model(torch, name: str, image_shape: tuple[int, ...], mean, std):
  nn = torch.nn
  h, w, c = image_shape
  mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
  std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

  class Standardise(nn.Module):  # the model owns its preprocessing, as ours does
    def forward(self, x):  # x: (B, H, W, C) as stored; uint8 scaled to [0, 1] first (models.common.normalize)
      with torch.profiler.record_function("standardise"):  # a named region for benchmarks.step_profile
        scaled = x.permute(0, 3, 1, 2).float()
        if x.dtype == torch.uint8:
          scaled = scaled / 255.0
        return (scaled - mean_t) / std_t

  if name == "lenet":
    return nn.Sequential(Standardise(), nn.Flatten(), nn.Linear(h * w * c, 300), nn.ReLU(), nn.Linear(300, 100),
                         nn.ReLU(), nn.Linear(100, 10))
  stages = {"conv2": ((64, 64),), "conv6": ((64, 64), (128, 128), (256, 256))}.get(name)
  if stages is None:
    raise ValueError(f"no PyTorch anchor for {name!r}; anchors: {', '.join(ANCHORED)}")
  layers, channels = [Standardise()], c
  for stage in stages:  # convolutions with ReLU, a ceil-mode 2x2 max-pool after each stage (as models/common.py)
    for width in stage:
      layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
      channels = width
    layers.append(nn.MaxPool2d(2, ceil_mode=True))
    h, w = -(-h // 2), -(-w // 2)
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * h * w, 256), nn.ReLU(), nn.Linear(256, 256),
                       nn.ReLU(), nn.Linear(256, 10))


def _optimizer(torch, name: str, params):
  recipe = config.RECIPES[name]
  if recipe.optimizer == "momentum":
    return torch.optim.SGD(params, lr=recipe.learning_rate, momentum=0.9)
  if recipe.optimizer == "adam":
    return torch.optim.Adam(params, lr=recipe.learning_rate)
  return torch.optim.SGD(params, lr=recipe.learning_rate)


def training_loop(name: str, ds: data.Dataset, *, channels_last: bool = False):
  """`run(steps)`: PyTorch eager training of `name` at its recipe batch, `steps` steps of a random batch
  gathered from the uint8 images, forward, cross-entropy, backward, optimizer step. None without torch."""
  torch = torch_or_none()
  if torch is None:
    return None
  torch.manual_seed(0)
  model = _model(torch, name, ds.image_shape, ds.mean, ds.std)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  opt = _optimizer(torch, name, model.parameters())
  x_all, y_all = torch.from_numpy(np.ascontiguousarray(ds.train_x)), torch.from_numpy(ds.train_y.astype(np.int64))
  batch = config.RECIPES[name].batch_size
  generator = torch.Generator().manual_seed(0)
  loss_fn = torch.nn.CrossEntropyLoss()

  def run(steps: int):
    for _ in range(steps):
      with torch.profiler.record_function("batch"):
        idx = torch.randint(len(y_all), (batch,), generator=generator)
        x, y = x_all[idx], y_all[idx]
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(x), y)
      loss.backward()
      opt.step()
    return float(loss.detach())

  return run


def train_steps_per_second(name: str, ds: data.Dataset, *, steps: int = 100, repeats: int = 3,
                           channels_last: bool = False) -> float | None:
  """Median steps/s (over `repeats` runs of `steps` steps, after a warm-up run) of `training_loop`. None
  without torch."""
  run = training_loop(name, ds, channels_last=channels_last)
  return None if run is None else steps / _median_seconds(lambda: run(steps), repeats)


def _median_seconds(run, repeats: int) -> float:
  """Median wall time of `run()` over `repeats` calls, after one untimed warm-up call."""
  run()
  times = []
  for _ in range(repeats):
    begin = time.perf_counter()
    run()
    times.append(time.perf_counter() - begin)
  return float(np.median(times))


def conv_part_runs(part: str, x, w, g) -> dict | None:
  """{"NCHW": run, "channels_last": run}: calls of one part ("forward", "input gradient", "weight
  gradient") of PyTorch's 3x3 SAME convolution (oneDNN on CPU) on the NHWC / HWIO arrays `x`, `w`, `g`,
  each returning the part's tensor in PyTorch's layout (NCHW / OIHW). None without torch."""
  torch = torch_or_none()
  if torch is None:
    return None
  mask = {"forward": None, "input gradient": (True, False, False), "weight gradient": (False, True, False)}[part]
  runs = {}
  for layout in ("NCHW", "channels_last"):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    tx, tg = (torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous(memory_format=fmt) for a in (x, g))
    tw = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous(memory_format=fmt)

    def run(tx=tx, tw=tw, tg=tg):
      with torch.no_grad():
        if mask is None:
          return torch.nn.functional.conv2d(tx, tw, padding=1)
        out = torch.ops.aten.convolution_backward(tg, tx, tw, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, mask)
        return out[0] if mask[0] else out[1]
    runs[layout] = run
  return runs


def conv_part_seconds(part: str, x, w, g, repeats: int) -> dict[str, float] | None:
  """{layout: median seconds} of `conv_part_runs`. None without torch."""
  runs = conv_part_runs(part, x, w, g)
  return None if runs is None else {layout: _median_seconds(run, repeats) for layout, run in runs.items()}


def ensemble_steps_per_second(name: str, ds: data.Dataset, seeds: int, *, steps: int = 100,
                              repeats: int = 3) -> float | None:
  """Median replica-steps/s of `seeds` models trained together as a `torch.func` ensemble: their parameters
  stacked (`stack_module_state`), one `vmap` of `functional_call` over them and their own batches, one
  backward pass and one optimizer step on the stacked tensors (the recipe's optimizer acts elementwise, so
  this is `seeds` independent runs). None without torch."""
  torch = torch_or_none()
  if torch is None:
    return None
  from torch.func import functional_call, stack_module_state

  torch.manual_seed(0)
  models = [_model(torch, name, ds.image_shape, ds.mean, ds.std) for _ in range(seeds)]
  params, buffers = stack_module_state(models)
  stacked = [torch.nn.Parameter(p) for p in params.values()]
  named = dict(zip(params, stacked))
  opt = _optimizer(torch, name, stacked)
  base = models[0].to("meta")
  x_all, y_all = torch.from_numpy(np.ascontiguousarray(ds.train_x)), torch.from_numpy(ds.train_y.astype(np.int64))
  batch = config.RECIPES[name].batch_size
  generator = torch.Generator().manual_seed(0)
  one = lambda p, b, x: functional_call(base, (p, b), (x,))
  loss_fn = torch.nn.functional.cross_entropy

  def run():
    for _ in range(steps):
      idx = torch.randint(len(y_all), (seeds, batch), generator=generator)
      opt.zero_grad(set_to_none=True)
      logits = torch.vmap(one)(named, buffers, x_all[idx])
      loss = loss_fn(logits.reshape(seeds * batch, -1), y_all[idx].reshape(-1), reduction="sum") / batch
      loss.backward()
      opt.step()
    return float(loss.detach())

  return seeds * steps / _median_seconds(run, repeats)


def processes_steps_per_second(name: str, ds: data.Dataset, processes: int, *, steps: int = 100,
                               repeats: int = 3) -> float | None:
  """Replica-steps/s of `processes` PyTorch processes of one thread each, each training its own seed
  (`training_loop`), started together once every one has built its model: the cores used as separate machines,
  as ours spreads seeds over CPU devices (`--cpu_devices`). Their data goes to them as one .npz file (no
  pickle). None without torch."""
  if torch_or_none() is None:
    return None
  import subprocess
  import sys
  import tempfile

  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "data.npz")
    np.savez(path, train_x=ds.train_x, train_y=ds.train_y, mean=np.asarray(ds.mean), std=np.asarray(ds.std))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "benchmarks.torch_anchor", name, path, str(steps), str(repeats)]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(processes)]
    try:
      for p in procs:  # each has built its model
        if p.stdout.readline().strip() != "ready":
          raise RuntimeError(f"a PyTorch worker of {name} did not start")
      for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
      return sum(float(p.communicate(timeout=600)[0]) for p in procs)
    finally:
      for p in procs:
        p.kill()


def _worker(name: str, path: str, steps: int, repeats: int) -> None:
  """One process of `processes_steps_per_second`: one thread, one seed; prints "ready" once its model is
  built, waits for "go" on stdin, prints its median steps/s (`_median_seconds`, after a warm-up run)."""
  files = np.load(path, allow_pickle=False)
  x, y = files["train_x"], files["train_y"]
  ds = data.Dataset(name, "benchmark", x, y, x[:0], y[:0], x[:0], y[:0], 10, tuple(files["mean"]),
                    tuple(files["std"]))
  run = training_loop(name, ds)
  torch_or_none().set_num_threads(1)
  print("ready", flush=True)
  input()
  print(steps / _median_seconds(lambda: run(steps), repeats), flush=True)


def sweep_loop(name: str, variables, layer: str, x, y, orders: dict, levels, mean, std) -> tuple[float, np.ndarray] | None:
  """The sweep as the loop a user writes in PyTorch: for each order and level, zero the removed units of
  `layer` (its activations) and evaluate the whole network on (x, y). Our trained or initialised Flax
  weights are copied in, so the accuracies are comparable. Returns (seconds, accuracy[order, level]),
  None without torch."""
  torch = torch_or_none()
  if torch is None:
    return None
  model = _model(torch, name, x.shape[1:], mean, std)
  params = variables["params"]
  linear = [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
  names = topology.names(create_model(name, image_shape=tuple(x.shape[1:])))
  with torch.no_grad():
    for index, (module, layer_name) in enumerate(zip(linear, names)):
      kernel = np.asarray(params[layer_name]["kernel"])
      if isinstance(module, torch.nn.Conv2d):  # HWIO -> OIHW
        kernel = kernel.transpose(3, 2, 0, 1)
      else:
        if index and isinstance(linear[index - 1], torch.nn.Conv2d):  # Flax flattens HWC, torch CHW
          channels = linear[index - 1].out_channels
          side = int(round((kernel.shape[0] // channels) ** 0.5))
          kernel = kernel.reshape(side, side, channels, -1).transpose(2, 0, 1, 3).reshape(kernel.shape[0], -1)
        kernel = kernel.T
      module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
      module.bias.copy_(torch.from_numpy(np.array(params[layer_name]["bias"])))
  position = names.index(layer)
  target = linear[position]
  keep = {"mask": None}
  target.register_forward_hook(lambda m, i, out: out * keep["mask"].reshape(1, -1, *([1] * (out.dim() - 2))))
  xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, np.int64))
  conv = isinstance(target, torch.nn.Conv2d)
  units = target.out_channels if conv else target.out_features
  acc = np.zeros((len(orders), len(levels)))
  begin = time.perf_counter()
  with torch.no_grad():
    for i, order in enumerate(orders.values()):
      for j, level in enumerate(levels):
        mask = torch.ones(units)
        mask[torch.from_numpy(np.asarray(order[:level], np.int64))] = 0.0
        keep["mask"] = mask
        acc[i, j] = float((model(xt).argmax(1) == yt).float().mean())
  return time.perf_counter() - begin, acc


if __name__ == "__main__":  # a worker of `processes_steps_per_second`
  import sys

  _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

r"""The full pruning curve of one conv layer of a user's ResNet (two residual blocks with BatchNorm), every
level and the five criteria, against the loops a user writes: our own per-level loop (`remove_units`,
one jitted forward per level) and Torch-Pruning's (deep copy, `DependencyGraph` prune, evaluate, per
level), measured in the same run on the same weights and images.

  python -m benchmarks.own_network [--images=1000] [--torch_levels=6] [--repeats=3]

The loops are timed on `--torch_levels` levels (and our loop on as many) and extrapolated to every level of
every order. Torch-Pruning comes with the `.[bench]` extra (pip install -e ".[bench]"); without it the
anchor is reported missing. Appends a line to benchmarks/results.jsonl.
"""

from __future__ import annotations

import copy
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.common import median_seconds, print_roofline, record, table
from benchmarks.torch_anchor import torch_or_none
from redundancy_jax.analyses import prune_sweep, pruning, units
from redundancy_jax.core import data
from redundancy_jax.models import from_module, topology

flags.DEFINE_integer("images", 1000, "Images every evaluation uses.", lower_bound=1)
flags.DEFINE_integer("torch_levels", 6, "Levels timed in the loops (extrapolated to every level and order).",
                     lower_bound=2)
flags.DEFINE_integer("repeats", 3, "Timed sweeps (the median is reported).", lower_bound=1)
FLAGS = flags.FLAGS

WIDTH, LAYER = 64, "Block_1/Conv_0"  # the first conv of the second block: 64 units, read by a conv


class Block(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(self.features, (3, 3), use_bias=False)(x)))
    y = nn.BatchNorm(use_running_average=not train)(nn.Conv(self.features, (3, 3), use_bias=False)(y))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """The flax examples' way: a strided stem, two residual blocks, global average pool, a classifier."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(WIDTH, (3, 3), strides=(2, 2), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = Block(WIDTH)(x, train)  # Block_0, then Block_1 (linen names a module when it is built)
    x = Block(WIDTH)(x, train)
    return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def _torch_resnet(torch, variables):
  """The same network in PyTorch (NCHW), the Flax weights and BatchNorm statistics copied in."""
  tnn = torch.nn

  def conv(kernel, stride=1):  # flax's SAME: at stride 2 on an even size, one row and column of zeros after
    c = tnn.Conv2d(kernel.shape[2], kernel.shape[3], 3, stride=stride, padding=1 if stride == 1 else 0, bias=False)
    c.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))
    return c if stride == 1 else tnn.Sequential(tnn.ZeroPad2d((0, 1, 0, 1)), c)

  def bn(params, stats):
    b = tnn.BatchNorm2d(len(params["scale"]), eps=1e-5)  # flax's default epsilon
    b.weight.data, b.bias.data = (torch.from_numpy(np.asarray(params[k]).copy()) for k in ("scale", "bias"))
    b.running_mean.data, b.running_var.data = (torch.from_numpy(np.asarray(stats[k]).copy()) for k in ("mean", "var"))
    return b

  p, s = variables["params"], variables["batch_stats"]

  class TBlock(tnn.Module):
    def __init__(self, name):
      super().__init__()
      self.conv1, self.bn1 = conv(p[name]["Conv_0"]["kernel"]), bn(p[name]["BatchNorm_0"], s[name]["BatchNorm_0"])
      self.conv2, self.bn2 = conv(p[name]["Conv_1"]["kernel"]), bn(p[name]["BatchNorm_1"], s[name]["BatchNorm_1"])

    def forward(self, x):
      return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

  class TResNet(tnn.Module):
    def __init__(self):
      super().__init__()
      self.stem, self.bn = conv(p["Conv_0"]["kernel"], 2), bn(p["BatchNorm_0"], s["BatchNorm_0"])
      self.block0, self.block1 = TBlock("Block_0"), TBlock("Block_1")
      self.fc = tnn.Linear(WIDTH, 10)
      self.fc.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(p["Dense_0"]["kernel"]).T))
      self.fc.bias.data = torch.from_numpy(np.asarray(p["Dense_0"]["bias"]).copy())

    def forward(self, x):
      x = self.block1(self.block0(torch.relu(self.bn(self.stem(x)))))
      return self.fc(x.mean(dim=(2, 3)))

  return TResNet().eval()


def torch_pruning_loop(net, variables, x, y, orders, levels) -> tuple[float, np.ndarray] | None:
  """Seconds per level of Torch-Pruning's loop (deep copy, prune `LAYER`'s channels with its dependency
  graph, evaluate) and its accuracies; None without torch-pruning."""
  torch = torch_or_none()
  try:
    import torch_pruning as tp
  except ImportError:
    return None
  model = _torch_resnet(torch, variables)
  images = torch.from_numpy(((np.asarray(x, np.float32) / 255.0 - net.mean[0]) / net.std[0]).transpose(0, 3, 1, 2))
  example = images[:1]
  accuracies, begin = [], time.perf_counter()
  for order in orders:
    row = []
    for level in levels:
      pruned = copy.deepcopy(model)
      if level:  # its dependency graph traces with autograd
        graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
        group = graph.get_pruning_group(pruned.block1.conv1, tp.prune_conv_out_channels,
                                        idxs=[int(i) for i in order[:level]])
        group.prune()
      with torch.no_grad():
        row.append(float((pruned(images).argmax(-1).numpy() == y).mean()))
    accuracies.append(row)
  return (time.perf_counter() - begin) / (len(orders) * len(levels)), np.asarray(accuracies)


def our_loop(net, variables, x, y, orders, levels) -> tuple[float, np.ndarray]:
  """Seconds per level of what a user writes with the library's pieces: `remove_units`, then a jitted
  forward, per level; and its accuracies."""
  x, y = jnp.asarray(x), np.asarray(y)
  forward = jax.jit(lambda v, keep: jnp.argmax(net.apply(pruning.remove_units(net, v, LAYER, keep), x), -1))
  jax.block_until_ready(forward(variables, jnp.ones(WIDTH, bool)))  # compiled before timing
  accuracies, begin = [], time.perf_counter()
  for order in orders:
    masks = pruning.level_masks(order, jnp.asarray(levels))
    accuracies.append([float(np.mean(np.asarray(forward(variables, keep)) == y)) for keep in masks])
  return (time.perf_counter() - begin) / (len(orders) * len(levels)), np.asarray(accuracies)


def main(argv):
  del argv
  print_roofline()
  ds = data.load_bundled_mnist(0)
  x, y = ds.test_x[: FLAGS.images], ds.test_y[: FLAGS.images]
  net = from_module("benchmarks.own_network:ResNet", ResNet(), mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
  variables = net.init(jax.random.key(0), ds.image_shape)
  stats = jax.tree.map(lambda a: a + 0.1 * jax.random.uniform(jax.random.key(1), a.shape), variables["batch_stats"])
  variables = {**variables, "batch_stats": stats}  # non-trivial statistics: the same in both frameworks
  info = topology.check(net, LAYER, prunable=True)
  print(f"{LAYER}: {info.units} units, BatchNorm {info.norm}, read by {info.consumer}")
  run = lambda: prune_sweep.compare_criteria(net, variables, LAYER, x, y, random_seeds=5)
  begin = time.perf_counter()
  result = run()
  first = time.perf_counter() - begin
  print(f"first sweep (with compilation): {first:.1f} s", flush=True)
  sweep = median_seconds(run, repeats=FLAGS.repeats, warmup=0)
  orders = [np.asarray(o) for o in result["orders"].values()]
  evaluations = len(orders) * len(result["levels"])
  levels = np.unique(np.linspace(0, WIDTH - 1, FLAGS.torch_levels).round().astype(int))  # (torch: no empty layer)
  sample = [orders[0], orders[-1]]
  ours_per_level, ours_acc = our_loop(net, variables, x, y, sample, levels)
  rows = [["sweep (one batched pass)", f"{sweep:.2f}", "1.0x", f"first call {first:.2f} s"],
          ["our per-level loop", f"{ours_per_level * evaluations:.1f}", f"{ours_per_level * evaluations / sweep:.1f}x",
           f"{ours_per_level:.3f} s per level"]]
  sweep_acc = [result["criteria"]["max_mag"]["accuracy"], None]
  figures = {"images": len(y), "evaluations": evaluations, "sweep_s": sweep, "first_call_s": first,
             "our_loop_s_per_level": ours_per_level}
  anchor = torch_pruning_loop(net, variables, x, y, sample, levels)
  if anchor is None:
    rows.append(["Torch-Pruning's loop", "-", "-", "not installed: pip install -e \".[bench]\""])
  else:
    per_level, torch_acc = anchor
    rows.append(["Torch-Pruning's loop", f"{per_level * evaluations:.1f}", f"{per_level * evaluations / sweep:.1f}x",
                 f"{per_level:.3f} s per level"])
    figures.update(torch_pruning_s_per_level=per_level, ratio_vs_torch_pruning=per_level * evaluations / sweep,
                   accuracies_differing_from_torch=int(np.sum(np.abs(torch_acc - ours_acc) > 1.5 / len(y))))
  del sweep_acc
  mask_levels = [list(result["levels"]).index(int(lv)) for lv in levels]
  ours_vs_sweep = int(np.sum(np.abs(ours_acc[0] - np.asarray(result["criteria"]["max_mag"]["accuracy"])[mask_levels])
                             > 1.5 / len(y)))
  print(table(rows, ["every level x 9 orders", "seconds", "vs the sweep", "note"]))
  print(f"\naccuracies of our loop differing from the sweep's (max_mag, {len(levels)} levels): {ours_vs_sweep}")
  if anchor is not None:
    print(f"accuracies of Torch-Pruning's loop differing from ours: {figures['accuracies_differing_from_torch']} "
          f"of {2 * len(levels)}")
  record("own_network", figures)


if __name__ == "__main__":
  app.run(main)

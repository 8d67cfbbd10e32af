"""The benchmarks run on CPU at small sizes: their tables and files hold figures consistent with each
other and with values recomputed here (speed itself is never asserted)."""

import json

import jax
import numpy as np
import pytest

from redundancy_jax.analyses import pruning, spectral, units
from redundancy_jax.core import config
from redundancy_jax.models import create_model, init_variables, layer_names


@pytest.mark.e2e
def test_accelerator_benchmark_small_on_cpu(tmp_path, capsys):
  from benchmarks import accelerator

  out, log = tmp_path / "accel", tmp_path / "results.jsonl"
  accelerator.run(accelerator.SMALL, ("lenet", "conv2"), str(out), str(log))
  stdout = capsys.readouterr().out
  result = json.loads((tmp_path / "accel.json").read_text())
  markdown = (tmp_path / "accel.md").read_text()
  assert markdown.strip() in stdout  # the printed table is the written one
  assert "| model | batch | devices | steps/s | images/s | recipe steps | projected recipe time |" in markdown

  sweeps = {r["case"]: r for r in result["sweeps"]}
  assert list(sweeps) == ["vgg19 fc1", "vgg19 conv16", "lenet fc1", "conv2 fc1"]
  assert sweeps["lenet fc1"]["units"] == 300 and sweeps["vgg19 conv16"]["units"] == 64  # VGG19 at width 1/8
  for r in sweeps.values():
    assert r["orders"] == 9 and r["images"] == 128 and r["median_s"] > 0
    np.testing.assert_allclose(r["evaluations_per_s"], 9 * (r["units"] + 1) / r["median_s"], rtol=1e-9)
  assert result["vgg19_sweep_memory"]["bytes"] > 0

  for r in result["training"]:
    recipe = config.RECIPES[r["model"]]
    assert r["batch"] == recipe.batch_size and r["recipe_steps"] == recipe.steps
    np.testing.assert_allclose(r["images_per_s"], r["batch"] * r["steps_per_s"], rtol=1e-9)
    np.testing.assert_allclose(r["projected_recipe_s"], recipe.steps / r["steps_per_s"], rtol=1e-9)
  assert [r["model"] for r in result["training"]] == ["lenet", "conv2"]

  # The ESD rows against numpy: the same initialised VGG19 (width 1/8, key 0), eigenvalues of W W^T
  # above the Marchenko-Pastur edge n v (1 + sqrt(m / n))^2 of the Glorot variance.
  model = create_model("vgg19", mean=(0.5,) * 3, std=(0.25,) * 3, width=0.125)
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  rows = result["esd"]["layers"]
  assert [r["layer"] for r in rows] == list(layer_names(model))
  for r in rows:
    W = np.asarray(units.unit_matrix(variables, r["layer"]), np.float64)
    m, n = W.shape
    assert (r["m"], r["n"]) == (m, n)
    var = spectral.glorot_variance(variables["params"][r["layer"]]["kernel"].shape)
    edge = n * var * (1 + np.sqrt(m / n)) ** 2
    eig = np.linalg.eigvalsh(W @ W.T)
    assert abs(int(np.sum(eig > edge)) - r["spikes_above_init_edge"]) <= int(np.sum(np.abs(eig - edge) < 1e-4 * edge))

  lines = log.read_text().splitlines()
  assert len(lines) == 1
  line = json.loads(lines[0])
  assert line["benchmark"] == "accelerator" and line["machine"]["backend"] == "cpu"
  assert line["figures"]["training"] == result["training"]


@pytest.mark.e2e  # compiles Conv-2's sweeps at full width: the end-to-end tier, beside the benchmarks run whole
def test_pytorch_sweep_anchor_evaluates_the_same_pruned_networks():
  """The anchor's loop (PyTorch, our weights copied in) gives our sweep's accuracies: LeNet fc1 and, with
  the HWC-to-CHW flatten order, Conv-2 fc1 and its last convolution."""
  import pytest

  pytest.importorskip("torch", reason="the PyTorch anchors are the optional .[bench] extra")
  from benchmarks import torch_anchor
  from benchmarks.common import removal_orders
  from redundancy_jax.core import data

  for name, layers in (("lenet", ("fc1",)), ("conv2", ("fc1", "conv2"))):
    ds = data.load_bundled_mnist(0) if name == "lenet" else data.random_images(seed=0, n_train=8, n_val=8, n_test=200)
    x, y = ds.test_x[:200], ds.test_y[:200]
    model = create_model(name, mean=ds.mean, std=ds.std)
    variables = init_variables(model, jax.random.key(0), ds.image_shape)
    for layer in layers:
      orders = removal_orders(variables, layer)
      levels = np.array([0, 7, 32, 60])
      ours = pruning.sweep(model, variables, layer, x, y, orders, levels)
      _, theirs = torch_anchor.sweep_loop(name, variables, layer, x, y, orders, levels, ds.mean, ds.std)
      np.testing.assert_allclose([ours[k]["accuracy"] for k in orders], theirs, atol=0.25 / len(y))


@pytest.mark.e2e
def test_step_profile_names_every_part_of_the_step_once():
  """benchmarks.step_profile's parts of LeNet (3 vmapped replicas) and Conv-2 (small: batch 8, width 1/8): one forward and one
  weight gradient per layer, an input gradient for every layer but the first (the images' is never
  computed), a pool backward per pool, the loss and the optimizer; each time positive."""
  from benchmarks import step_profile
  from benchmarks.common import training_run

  for model, seeds, layers, pools in (("lenet", 3, ["fc1", "fc2", "fc3"], 0),
                                      ("conv2", 1, ["conv1", "conv2", "fc1", "fc2", "fc3"], 1)):
    setup, ds = training_run(model, 64, num_seeds=seeds)
    parts = step_profile.our_parts(model, seeds, 8, ds.train_x, ds.mean, ds.std, setup.tx, 1, width=0.125)
    names = [p for _, p, _ in parts]
    assert [p.split()[0] for r, p, _ in parts if r in ("conv forward", "dense forward")] == layers
    assert sum(n.endswith("weight gradient") for n in names) == len(layers)
    assert [n.split()[0] for n in names if n.endswith("input gradient")] == layers[1:]
    assert sum(n.endswith("ReLU and bias backward") for n in names) == len(layers) - 1
    assert sum(n.startswith("pool") and n.endswith("backward") for n in names) == pools
    assert [r for r, _, _ in parts][-2:] == ["loss", "optimizer"] and set(r for r, _, _ in parts) <= set(step_profile.ROWS)
    assert all(ms > 0 for _, _, ms in parts)


def test_step_profile_puts_each_pytorch_operator_in_the_row_of_its_caller():
  """PyTorch's profiled operators go to the row of the nearest named operation up their call tree (the
  autograd node, the optimizer's step, the loop's named regions), else "other operators"."""
  from benchmarks import step_profile

  class Event:
    def __init__(self, name, parent=None):
      self.name, self.cpu_parent = name, parent

  backward = Event("autograd::engine::evaluate_function: ConvolutionBackward0")
  assert step_profile._torch_row(Event("aten::copy_", Event("aten::convolution_backward", backward))) == "conv backward"
  assert step_profile._torch_row(Event("aten::mm", Event("AddmmBackward0"))) == "dense backward"
  assert step_profile._torch_row(Event("aten::sqrt", Event("Optimizer.step#Adam.step"))) == "optimizer"
  assert step_profile._torch_row(Event("aten::index", Event("batch"))) == "batch gather and standardise"
  assert step_profile._torch_row(Event("aten::fill_")) == "other operators"


@pytest.mark.e2e
def test_train_throughput_runs_end_to_end_and_logs_consistent_figures(tmp_path):
  """`python -m benchmarks.train_throughput` as a user runs it (a subprocess: its flags would clash with
  step_profile's in one process), on LeNet with 2 seeds and one round: the table it prints and the line it
  logs agree, the epoch form is the one the backend policy picks (a compiled scan for LeNet on CPU), and
  the derived figures follow from the measured ones."""
  import os
  import subprocess
  import sys

  log = tmp_path / "results.jsonl"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--models=lenet", "--seeds=2", "--rounds=1",
                        "--epochs=1", "--cpu_devices=3", f"--results={log}"], cwd=root, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  figures = json.loads(log.read_text().splitlines()[-1])["figures"]
  (lenet,) = figures["models"]
  assert lenet["model"] == "lenet" and lenet["batch"] == 64 and lenet["epoch_form"] == "lax.scan"
  assert f"| lenet | 64 | lax.scan | {lenet['steps_per_s']:.1f} |" in run.stdout
  np.testing.assert_allclose(lenet["roofline_fraction"],
                             lenet["gflop_per_step"] * lenet["steps_per_s"] / figures["roofline_gflops"])
  seeds = figures["seeds"]
  assert seeds["seeds"] == 2 and seeds["ours"] > 0
  assert seeds["cpu_devices"] == 2 and seeds["spread"] > 0  # of the 3 CPU devices, the most that divide the seeds
  pytorch = [seeds[k] for k in ("sequential", "ensemble", "processes") if seeds[k]]
  if pytorch:
    np.testing.assert_allclose(seeds["ratio"], seeds["ours"] / max(pytorch))
    np.testing.assert_allclose(seeds["ratio_spread"], seeds["spread"] / max(pytorch))
    np.testing.assert_allclose(seeds["ratio_spread_named"], seeds["spread"] / max(seeds["sequential"], seeds["ensemble"]))
  if lenet["anchor"] is not None:  # PyTorch installed (the .[bench] extra)
    np.testing.assert_allclose(lenet["ratio"], lenet["steps_per_s"] / lenet["anchor_steps_per_s"])


@pytest.mark.parametrize("part", ["forward", "input gradient", "weight gradient"])
def test_pytorch_conv_anchor_computes_the_same_part_as_ours(part):
  """benchmarks.conv's PyTorch column times the same convolution part as ours, in both memory formats:
  its values, brought back to NHWC / HWIO, equal ours within float32 rounding."""
  pytest.importorskip("torch")
  from benchmarks import torch_anchor
  from redundancy_jax.models import conv

  k = jax.random.split(jax.random.key(3), 3)
  x, w, g = jax.random.normal(k[0], (2, 6, 6, 5)), jax.random.normal(k[1], (3, 3, 5, 7)), jax.random.normal(k[2], (2, 6, 6, 7))
  out, vjp = jax.vjp(conv.conv3x3, x, w)
  ours = {"forward": out, "input gradient": vjp(g)[0], "weight gradient": vjp(g)[1]}[part]
  for layout, run in torch_anchor.conv_part_runs(part, x, w, g).items():
    got = run().numpy()
    got = got.transpose(2, 3, 1, 0) if part == "weight gradient" else got.transpose(0, 2, 3, 1)  # OIHW -> HWIO, NCHW -> NHWC
    np.testing.assert_allclose(got, ours, rtol=1e-5, atol=1e-5 * float(np.abs(ours).max()), err_msg=layout)


def test_every_formulation_benchmarks_conv_times_computes_the_same_part():
  """benchmarks.conv times, per part, formulations that agree (oneDNN's among them where it builds): each
  equal to XLA's within float32 rounding on a shape with no exactly representable sums."""
  from benchmarks import conv_parts
  from redundancy_jax.models import onednn

  k = jax.random.split(jax.random.key(4), 3)
  x, w, g = jax.random.normal(k[0], (3, 7, 7, 6)), jax.random.normal(k[1], (3, 3, 6, 5)), jax.random.normal(k[2], (3, 7, 7, 5))
  parts = conv_parts.formulations(6, 5)
  assert ("onednn" in parts["weight gradient"]) == (onednn.unavailable() is None)
  for part, options in parts.items():
    reference = np.asarray(options["xla"](x, w, g))
    for name, f in options.items():
      np.testing.assert_allclose(f(x, w, g), reference, rtol=1e-5, atol=1e-5 * float(np.abs(reference).max()),
                                 err_msg=f"{part}: {name}")

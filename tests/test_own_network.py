"""A researcher's own network, written here as a user would (flax.linen and flax.nnx, as the flax examples
write them): a small ResNet with BatchNorm and two residual blocks, an MLP-Mixer block, an NNX MLP. Each is
trained a few hundred steps on the bundled MNIST through `--model=FILE.py:FACTORY`; the batched sweep is
checked against a per-level evaluation written independently here (flax's own `intercept_methods`
zeroing the unit after its BatchNorm, or a forward by hand), and every refusal against its reason."""

import html
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization

from helpers import quiet
from redundancy_jax.analyses import criteria, network, prune_sweep, pruning, units
from redundancy_jax.core import config, data, epochs, errors, jaxprs, steps, storage, train, variants
from redundancy_jax.core.config import TrainConfig, override
from redundancy_jax.core.runs import Run
from redundancy_jax.models import create_model, topology

HERE = os.path.abspath(__file__)


# ----------------------------------------------------------------------------- the user's models


class Block(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(self.features, (3, 3), use_bias=False)(x)
    y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)
    return nn.relu(x + y)


class ResNet(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(8, (3, 3), strides=(2, 2), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    x = Block(8)(x, train)
    x = Block(8)(x, train)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def resnet(num_classes):
  return ResNet(num_classes)


class MixerBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    y = jnp.swapaxes(nn.LayerNorm()(x), 1, 2)
    y = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(24)(y)))  # token mixing
    x = x + jnp.swapaxes(y, 1, 2)
    y = nn.Dense(x.shape[2])(nn.gelu(nn.Dense(32)(nn.LayerNorm()(x))))  # channel mixing
    return x + y


class Mixer(nn.Module):
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(16, (7, 7), strides=(7, 7), name="stem")(x)  # 4 x 4 patches
    x = MixerBlock()(x.reshape(x.shape[0], -1, x.shape[-1]))
    return nn.Dense(self.num_classes, name="head")(jnp.mean(nn.LayerNorm()(x), axis=1))


def mixer(num_classes):
  return Mixer(num_classes)


class NnxMLP(nnx.Module):
  def __init__(self, num_classes=10, *, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(784, 64, rngs=rngs)
    self.fc2 = nnx.Linear(64, 32, rngs=rngs)
    self.out = nnx.Linear(32, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.out(nnx.relu(self.fc2(x)))


def nnx_mlp(num_classes, rngs=None):
  return NnxMLP(num_classes, rngs=rngs)


class NnxConvNet(nnx.Module):
  def __init__(self, num_classes=10, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(8, 8, (3, 3), padding=1, rngs=rngs)  # the same SAME convolution, padding spelt out
    self.down = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
    self.out = nnx.Linear(16, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.down(nnx.relu(self.conv2(nnx.relu(self.conv1(x))))))
    return self.out(jnp.mean(x, axis=(1, 2)))


def nnx_conv(num_classes, rngs=None):
  return NnxConvNet(num_classes, rngs=rngs)


class Odd(nn.Module):  # what cannot be pruned exactly, each for its reason
  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = nn.sigmoid(nn.Dense(12, name="sig")(x))  # f(0) = 0.5
    x = nn.LayerNorm()(nn.Dense(12, name="normed")(x))
    shared = nn.Dense(12, name="shared")
    x = shared(nn.relu(shared(nn.relu(nn.Dense(12, name="ok")(x)))))
    return nn.Dense(10, name="head")(nn.relu(x))


def odd(num_classes):
  return Odd()


def spec(factory: str) -> str:
  return f"{HERE}:{factory}"


# ----------------------------------------------------------------------------- trained once


STEPS = {"resnet": 240, "mixer": 240, "nnx_mlp": 240}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """{factory: Trained} of each user model, trained on the bundled MNIST through the library's loop."""
  out = {}
  for factory, steps in STEPS.items():
    run = Run(str(tmp_path_factory.mktemp(factory)))
    out[factory] = train.find_or_train(run, TrainConfig(model=spec(factory), steps=steps, eval_every=60), quiet)
  return out


def test_a_users_models_train_and_their_layers_are_found(trained):
  found = {f: {l.name: l for l in topology.of(t.model)} for f, t in trained.items()}
  r = found["resnet"]
  assert list(r) == ["Conv_0", "Block_0/Conv_0", "Block_0/Conv_1", "Block_1/Conv_0", "Block_1/Conv_1", "Dense_0"]
  assert r["Block_0/Conv_0"].norm == "Block_0/BatchNorm_0" and r["Block_0/Conv_0"].consumer == "Block_0/Conv_1"
  assert r["Block_0/Conv_1"].prunable and r["Block_0/Conv_1"].consumer is None  # added to the skip path
  assert r["Dense_0"].classifier and not r["Dense_0"].prunable
  m = found["mixer"]
  assert not m["stem"].prunable and "MixerBlock_0/LayerNorm_0 normalises its units together" in m["stem"].reason
  assert all(m[f"MixerBlock_0/Dense_{i}"].prunable for i in range(4))
  # (linen names a layer when it is built: the outer Dense(tokens) before the hidden Dense(24) it reads)
  assert m["MixerBlock_0/Dense_1"].units == 24 and m["MixerBlock_0/Dense_1"].consumer == "MixerBlock_0/Dense_0"
  assert m["MixerBlock_0/Dense_0"].consumer is None  # added back to the residual stream
  assert [l for l in found["nnx_mlp"]] == ["fc1", "fc2", "out"] and found["nnx_mlp"]["fc1"].consumer == "fc2"
  for f, t in trained.items():  # each learned something (chance: 10%)
    accuracy = variants.loss_and_accuracy(t.model, t.variables, t.dataset.test_x, t.dataset.test_y)[1]
    assert accuracy > 0.3, (f, accuracy)  # 240 steps: well above chance, far from converged


def test_with_onednn_a_users_conv_layers_keep_the_python_stepped_epoch(monkeypatch):
  """`REDUNDANCY_JAX_CONV=onednn` routes stride-1 SAME 3x3 convolutions to oneDNN, not the ResNet's
  stride-2 first layer: its differentiated step still holds an XLA convolution, which XLA:CPU runs far
  slower inside a scan, so its epoch stays stepped from Python; Conv-2's has none left and scans."""
  from redundancy_jax.models import onednn

  if onednn.unavailable():  # .ci/run installs oneDNN and a compiler; a machine without them says so here
    pytest.skip(onednn.unavailable())
  ds = data.load_bundled_mnist(0)
  setups = {name: steps.make_setup(TrainConfig(model=name, steps=10, width=0.125 if name == "conv2" else None)
                                   .resolve(), ds) for name in (spec("resnet"), "conv2")}
  monkeypatch.setenv("REDUNDANCY_JAX_CONV", "onednn")
  assert steps.xla_convolutions_in_step(setups[spec("resnet")])
  assert epochs.epoch_form(setups[spec("resnet")]) == "python loop"
  assert not steps.xla_convolutions_in_step(setups["conv2"]) and epochs.epoch_form(setups["conv2"]) == "lax.scan"
  monkeypatch.delenv("REDUNDANCY_JAX_CONV")  # the rule's convolutions: XLA's, in both
  assert steps.xla_convolutions_in_step(setups["conv2"]) and epochs.epoch_form(setups["conv2"]) == "python loop"


def test_primitives_reaches_into_every_nested_jaxpr():
  """`jaxprs.primitives` (what `steps.xla_convolutions_in_step` reads) finds a primitive inside a jit, a
  scan's body, a conditional's branch and a custom VJP's rules, and nothing that is not there."""
  @jax.custom_vjp
  def f(x):
    return jnp.sin(x)

  f.defvjp(lambda x: (jnp.sin(x), jnp.cos(x)), lambda c, g: (jnp.exp(c) * g,))

  def g(x):
    body = lambda c, _: (jax.lax.cond(c.sum() > 0, jnp.tanh, jnp.log1p, c), None)
    return jax.jit(lambda y: jax.lax.scan(body, y, None, length=2)[0])(f(x)).sum()

  names = jaxprs.primitives(jax.make_jaxpr(jax.grad(g))(jnp.ones(3)))
  assert {"sin", "cos", "exp", "tanh", "log1p", "scan", "cond"} <= names
  assert not {"conv_general_dilated", "ffi_call", "sqrt"} & names


@pytest.mark.parametrize("factory", ["resnet", "nnx_conv"])
def test_with_onednn_a_users_3x3_convolutions_train_through_onednn(monkeypatch, factory):
  """Under `REDUNDANCY_JAX_CONV=onednn` a user's stride-1 SAME 3x3 convolutions (linen `nn.Conv`, NNX
  `nnx.Conv`, padding "SAME" or 1) train with oneDNN's parts: the training call's logits and batch
  statistics are bit for bit the default's (XLA's forward outside differentiation), the gradients equal
  the default's within float32 rounding, and the differentiated step calls oneDNN, keeping XLA's
  convolution only for the stride-2 layer."""
  from redundancy_jax.models import onednn

  if onednn.unavailable():  # .ci/run installs oneDNN and a compiler; a machine without them says so here
    pytest.skip(onednn.unavailable())
  ds = data.load_bundled_mnist(0)
  net = steps.make_setup(TrainConfig(model=spec(factory), steps=10).resolve(), ds).model
  variables = net.init(jax.random.key(0), net.image_shape)
  x, y = jnp.asarray(ds.train_x[:32]), jnp.asarray(ds.train_y[:32])

  def loss(params):
    logits, _ = net.apply_train({**variables, "params": params}, x)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])

  def run():  # new functions each time: traced under the environment of the moment
    grad = lambda p: jax.grad(loss)(p)
    return (jax.jit(lambda v: net.apply_train(v, x))(variables), jax.jit(grad)(variables["params"]),
            jaxprs.primitives(jax.make_jaxpr(grad)(variables["params"])))

  (logits0, stats0), grads0, prims0 = run()
  monkeypatch.setenv("REDUNDANCY_JAX_CONV", "onednn")
  (logits, stats), grads, prims = run()
  np.testing.assert_array_equal(logits, logits0)
  jax.tree.map(np.testing.assert_array_equal, stats, stats0)
  for path, g0 in jax.tree_util.tree_flatten_with_path(grads0)[0]:
    g = topology.get(grads, [k.key for k in path])
    np.testing.assert_allclose(g, g0, rtol=2e-4, atol=2e-5 * float(np.abs(g0).max()), err_msg=str(path))
  assert "ffi_call" in prims and "ffi_call" not in prims0
  assert "conv_general_dilated" in prims  # the stride-2 layer's


def test_refusals_give_their_reason_before_anything_runs(tmp_path):
  net = create_model(spec("odd"), image_shape=(28, 28, 1))
  info = {l.name: l for l in topology.of(net)}
  assert "f(0) != 0" in info["sig"].reason
  assert "LayerNorm_0 normalises its units together" in info["normed"].reason
  assert info["shared"].reason == "its kernel is used at 2 call sites"
  assert info["ok"].prunable and info["head"].classifier
  for layer, reason in (("sig", "f\\(0\\) != 0"), ("normed", "normalises"), ("shared", "2 call sites"),
                        ("head", "the classifier")):
    cfg = override(prune_sweep.PruneSweepConfig(), model=spec("odd"), layer=layer, workdir=str(tmp_path / layer))
    with pytest.raises(pruning.PruningError, match=f"layer '{layer}' of .*odd is not prunable: .*{reason}"):
      prune_sweep.run(cfg, log=quiet)
    assert not (tmp_path / layer).exists()  # refused before training
  with pytest.raises(errors.BadOption, match="has no callable 'nothing'; its callables: .*resnet"):
    create_model(spec("nothing"))
  with pytest.raises(errors.BadOption, match="no file"):
    create_model("/no/such/file.py:resnet")


# ----------------------------------------------------------------------------- removal and the sweep


def _zeroed_by_flax(net, variables, x, target: str, keep):
  """The linen network with unit j of `target` (a module path: the layer, or the BatchNorm after it) zeroed
  where keep[j] is False, through flax's own interception (not the library's hooks)."""

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and "/".join(context.module.scope.path) == target:
      out = out * jnp.asarray(keep, out.dtype)
    return out

  x = (x.astype(jnp.float32) / 255.0 - jnp.asarray(net.mean)) / jnp.asarray(net.std)
  with nn.intercept_methods(interceptor):
    return net.module.apply(variables, x, **({"train": False} if "train" in _signature(net) else {}))


def _signature(net):
  import inspect

  return inspect.signature(type(net.module).__call__).parameters


def _nnx_by_hand(net, variables, x, layer=None, keep=None):
  p = variables["params"]
  h = ((np.asarray(x, np.float32) / 255.0 - net.mean[0]) / net.std[0]).reshape(len(x), -1)
  for name in ("fc1", "fc2"):
    h = np.maximum(h @ p[name]["kernel"] + p[name]["bias"], 0)
    if name == layer:
      h = h * keep
  return h @ p["out"]["kernel"] + p["out"]["bias"]


def _reference_accuracy(t, layer, keep, x, y):
  info = topology.check(t.model, layer)
  if t.model.framework == "nnx":
    logits = _nnx_by_hand(t.model, t.variables, x, layer, keep)
  else:
    logits = _zeroed_by_flax(t.model, t.variables, jnp.asarray(x), info.norm or layer, keep)
  return float(np.mean(np.argmax(np.asarray(logits), -1) == y))


CASES = [("resnet", "Block_0/Conv_0"), ("resnet", "Block_1/Conv_1"), ("resnet", "Conv_0"),
         ("mixer", "MixerBlock_0/Dense_1"), ("mixer", "MixerBlock_0/Dense_2"), ("nnx_mlp", "fc1"), ("nnx_mlp", "fc2")]


@pytest.mark.parametrize("factory, layer", CASES)
def test_the_batched_sweep_equals_a_per_level_evaluation_written_here(trained, factory, layer):
  t = trained[factory]
  x, y = t.dataset.test_x[:400], t.dataset.test_y[:400]
  W = units.unit_matrix(t.variables, layer)
  m = W.shape[0]
  orders = {c: pruning.removal_order(W, c) for c in criteria.REPORT_DETERMINISTIC}
  orders["random/0"] = pruning.removal_order(W, "random", key=jax.random.key(3))
  levels = sorted({0, 1, m // 3, m // 2, m - 2, m})
  out = pruning.sweep(t.model, t.variables, layer, x, y, orders, levels)
  for name, order in orders.items():
    masks = np.asarray(pruning.level_masks(order, jnp.asarray(levels)))
    for i, keep in enumerate(masks):
      expected = _reference_accuracy(t, layer, keep, x, y)
      assert out[name]["accuracy"][i] == pytest.approx(expected, abs=1.01 / len(y)), (name, levels[i])


@pytest.mark.parametrize("factory, layer", [("resnet", "Block_0/Conv_0"), ("resnet", "Conv_0"), ("nnx_mlp", "fc2")])
def test_removal_masks_the_parameter_pytree_exactly_with_batchnorm(trained, factory, layer):
  """`remove_units` (kernel slice, bias, the BatchNorm's scale and offset) computes the network with those
  units zeroed after their BatchNorm; masking the kernel alone does not (BatchNorm's shift flows on)."""
  t = trained[factory]
  x = t.dataset.test_x[:64]
  keep = np.random.default_rng(0).random(units.unit_matrix(t.variables, layer).shape[0]) < 0.5
  masked = t.model.apply(pruning.remove_units(t.model, t.variables, layer, jnp.asarray(keep)), x)
  info = topology.check(t.model, layer)
  if factory == "nnx_mlp":
    expected = _nnx_by_hand(t.model, t.variables, x, layer, keep)
  else:
    expected = _zeroed_by_flax(t.model, t.variables, jnp.asarray(x), info.norm, keep)
  np.testing.assert_allclose(masked, expected, rtol=1e-4, atol=1e-4)
  if info.norm:
    path = (*layer.split("/"), "kernel")
    kernel_only = {**t.variables, "params": topology.replace(
      t.variables["params"], path, topology.get(t.variables["params"], path) * keep)}
    assert not np.allclose(t.model.apply(kernel_only, x), masked, atol=1e-3)


# ----------------------------------------------------------------------------- variables from files


def test_variables_load_from_orbax_msgpack_and_npz_to_the_same_accuracy(trained, tmp_path):
  import orbax.checkpoint as ocp

  t = trained["resnet"]
  variables = jax.tree.map(np.asarray, t.variables)
  paths = {"npz": str(tmp_path / "v.npz"), "msgpack": str(tmp_path / "v.msgpack"), "orbax": str(tmp_path / "orbax")}
  storage.save_tree(paths["npz"], variables)
  with open(paths["msgpack"], "wb") as f:
    f.write(serialization.msgpack_serialize(variables))
  ocp.StandardCheckpointer().save(paths["orbax"], variables)
  ocp.StandardCheckpointer().wait_until_finished() if hasattr(ocp.StandardCheckpointer, "wait_until_finished") else None
  expected = variants.loss_and_accuracy(t.model, t.variables, t.dataset.test_x[:500], t.dataset.test_y[:500])
  cfg = TrainConfig(model=spec("resnet"), steps=STEPS["resnet"], eval_every=60)
  for kind, path in paths.items():
    loaded = train.load_trained(cfg, path)
    got = variants.loss_and_accuracy(loaded.model, loaded.variables, t.dataset.test_x[:500], t.dataset.test_y[:500])
    assert got == pytest.approx(expected, abs=1e-6), kind
  with pytest.raises(errors.BadOption, match="does not hold this network's variables"):
    train.load_trained(TrainConfig(model=spec("nnx_mlp")), paths["npz"])


# ----------------------------------------------------------------------------- the command and its page


@pytest.mark.e2e
def test_network_command_writes_the_outputs_and_a_page(trained, tmp_path):
  cfg = override(config.preset(network.NetworkConfig(), "quick"), model=spec("nnx_mlp"), steps=STEPS["nnx_mlp"],
                 eval_every=60, workdir=str(tmp_path / "mlp"), random_seeds=2)
  out = network.run(cfg, log=quiet)
  for name in ("prune_sweep/results.json", "prune_sweep/curves.csv", "prune_sweep/orders.npz",
               "prune_sweep/figure2.png", "subspace/all/results.json", "subspace/all/esd.png", "index.html"):
    assert os.path.exists(tmp_path / "mlp" / name), name
  rows = {r["layer"]: r for r in out["rows"]}
  assert list(rows) == ["fc1", "fc2", "out"] and "best" not in rows["out"]
  page = html.unescape((tmp_path / "mlp" / "index.html").read_text())
  assert "not prunable: its units are the network's outputs (the classifier)" in page
  layer = out["pruning"]["layers"]["fc1"]
  best, fraction = network.best_criterion(layer)
  base = layer["base_accuracy"]
  for c, r in layer["criteria"].items():  # no criterion removes more within 1 point (by hand, on the curves)
    ok = [lv for lv, a in zip(layer["levels"], r["accuracy"]) if a >= base - 0.01]
    prefix = next((i for i, lv in enumerate(layer["levels"]) if lv not in ok), len(layer["levels"])) - 1
    assert layer["levels"][max(prefix, 0)] / layer["units"] <= fraction + 1e-12, c
  assert rows["fc1"]["removable"] == round(fraction * 64)
  spikes = out["subspace"]["layers"]["fc1"]["trained"]["fit"]["spikes"]
  assert rows["fc1"]["outliers"] == spikes and f">{spikes} (λ+" in page


def test_a_model_file_imports_the_modules_beside_it(tmp_path):
  """As `python my_models.py` would: the factory's file imports a module of its own folder."""
  (tmp_path / "my_layers.py").write_text("import flax.linen as nn\n\nWIDTH = 7\n")
  (tmp_path / "my_models.py").write_text(
    "import flax.linen as nn\nfrom my_layers import WIDTH\n\n\nclass MLP(nn.Module):\n  @nn.compact\n"
    "  def __call__(self, x):\n    return nn.Dense(10)(nn.relu(nn.Dense(WIDTH)(x.reshape(x.shape[0], -1))))\n\n\n"
    "def mlp(num_classes):\n  return MLP()\n")
  net = create_model(f"{tmp_path}/my_models.py:mlp", num_classes=10, image_shape=(28, 28, 1))
  assert topology.check(net, "Dense_1").units == 7  # linen names the outer Dense(10) first: Dense_0

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redundancy_jax.core import variants
from redundancy_jax.models import MODELS, count_params, create_model, from_module, init_variables, prunable_layers, topology
from redundancy_jax.models.common import Layer, PlanNet

SHAPES = {"lenet": (28, 28, 1), "mlp": (28, 28, 1), "conv2": (32, 32, 3), "conv4": (32, 32, 3), "conv6": (32, 32, 3), "vgg19": (32, 32, 3)}


def _abstract(name, **options):
  model = create_model(name, **options)
  return model, jax.eval_shape(lambda: init_variables(model, jax.random.key(0), SHAPES[name]))


@pytest.mark.parametrize(
  "name, total, conv",
  [
    ("lenet", 266_610, 0),
    ("conv2", 4_301_642, 38_720),
    ("conv4", 2_425_930, 260_160),
    ("conv6", 2_262_602, 1_145_408),
    ("vgg19", 20_554_826 + 11_008, None),
  ],
)
def test_parameter_counts_match_spec(name, total, conv):
  _, variables = _abstract(name)
  params = variables["params"]
  assert count_params(params) == total
  if conv is not None:
    assert count_params({k: v for k, v in params.items() if k.startswith("conv")}) == conv


def test_vgg19_without_batchnorm_has_spec_count():
  _, variables = _abstract("vgg19", batch_norm=False)
  assert count_params(variables["params"]) == 20_554_826
  assert "batch_stats" not in variables


def test_layer_names_are_explicit():
  _, variables = _abstract("conv6")
  assert sorted(variables["params"]) == sorted([f"conv{i}" for i in range(1, 7)] + ["fc1", "fc2", "fc3"])
  assert prunable_layers(create_model("lenet")) == ("fc1", "fc2")


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="lenet, conv2, conv4, conv6, vgg19"):
    create_model("resnet")


def test_glorot_normal_init_and_zero_bias():
  model = create_model("lenet")
  params = init_variables(model, jax.random.key(1), SHAPES["lenet"])["params"]
  kernel = np.asarray(params["fc1"]["kernel"])
  expected_std = np.sqrt(2.0 / (784 + 300))
  assert abs(kernel.std() / expected_std - 1) < 0.03
  assert np.all(np.asarray(params["fc1"]["bias"]) == 0)


def test_width_multiplier_scales_hidden_layers_only():
  model = create_model("conv2", width=0.5)
  params = init_variables(model, jax.random.key(0), SHAPES["conv2"])["params"]
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 32)
  assert params["fc1"]["kernel"].shape == (16 * 16 * 32, 128)
  assert params["fc3"]["kernel"].shape == (128, 10)


@pytest.mark.parametrize("name", ["lenet", "conv2"])
def test_head_and_tail_of_every_cut_compose_to_the_full_forward(name):
  """The engine's split of a network at a layer (`variants.split`): the head's boundary fed to the tail with
  the unchanged value (a mask of ones, the layer's own output, its own kernel) gives the full forward."""
  model = create_model(name, width=0.25)
  variables = init_variables(model, jax.random.key(0), SHAPES[name])
  x = jax.random.normal(jax.random.key(1), (3, *SHAPES[name]))
  full = model.apply(variables, x)
  for info in topology.of(model):
    output = topology.activations(model, variables, x, info.name)  # (only its shape is used)
    for cut in (variants.Cut("mask", info.name), variants.Cut("kernel", info.name),
                variants.Cut("output", info.name, capture=(info.name,))):
      split = variants.split(model, cut, *variants._shapes(variables, x))
      boundary = split.head.evaluate(*jax.tree.leaves(variables), x)
      value = {"mask": jnp.ones(info.units), "kernel": topology.kernel(variables, info.name)}.get(cut.kind)
      if cut.kind == "output":  # the layer's output computed from its captured input, as a Dense or Conv does
        value = _layer_call(model, variables, x, info.name)
        assert value.shape[:-1] == output.shape[:-1] or info.kind == "dense"
      np.testing.assert_allclose(split.tail.evaluate(*boundary, value)[0], full, rtol=1e-5, atol=1e-5)


def _layer_call(net, variables, x, layer):
  out = []
  net.apply(variables, x, hook=lambda name, kind, x_in, call: out.append(call(x_in)) or out[-1] if name == layer
            else call(x_in))
  return out[0]


def test_activations_are_after_the_nonlinearity_by_hand():
  model = create_model("lenet")
  variables = init_variables(model, jax.random.key(0), SHAPES["lenet"])
  x = jax.random.uniform(jax.random.key(2), (2, 28, 28, 1))
  acts = topology.activations(model, variables, x, "fc1")
  p = variables["params"]
  by_hand = np.maximum(np.asarray(x).reshape(2, -1) @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
  assert acts.shape == (2, 300) and np.all(np.asarray(acts) >= 0)
  np.testing.assert_allclose(acts, by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_builds_with_an_explicit_plan(name):
  """Every name in MODELS builds, and its plan is what the pruning and subspace code rely on: unique
  explicit names conv1..convK then fc1..fcL in network order, each the name of its parameters (plus
  <conv>_bn with BatchNorm) with as many units as the plan says; the last layer is the 10-way classifier
  and the only one that is not prunable."""
  model, variables = _abstract(name)
  plan = model.module.plan
  kinds = [layer.kind for layer in plan]
  k, l = kinds.count("conv"), kinds.count("dense")
  assert kinds == ["conv"] * k + ["dense"] * l and l >= 1
  names = [layer.name for layer in plan]
  assert names == [f"conv{i}" for i in range(1, k + 1)] + [f"fc{i}" for i in range(1, l + 1)]
  params = variables["params"]
  batch_norm = {f"{n}_bn" for n in names[:k]} if "batch_stats" in variables else set()
  assert set(params) == set(names) | batch_norm
  for layer in plan:
    assert params[layer.name]["kernel"].shape[-1] == layer.features == params[layer.name]["bias"].shape[0]
  assert [layer.output for layer in plan] == [False] * (k + l - 1) + [True]
  assert plan[-1].features == 10
  # the topology traced from the model agrees with the plan it was built from: names, kinds, units, the
  # BatchNorm after each conv, the classifier, and each layer read by the next (positions: a flatten)
  found = topology.of(model)
  assert [(i.name, i.kind, i.units) for i in found] == [(p.name, p.kind, p.features) for p in plan]
  assert [i.norm for i in found] == [f"{n}_bn" if f"{n}_bn" in batch_norm else None for n in names]
  assert [i.classifier for i in found] == [False] * (k + l - 1) + [True]
  assert prunable_layers(model) == tuple(names[:-1])
  for info, nxt in zip(found[:-1], plan[1:]):
    if info.consumer is not None:  # (small maps go through shifted matmuls, which the topology leaves unnamed)
      assert info.consumer == nxt.name and info.consumer_kind == nxt.kind


@pytest.mark.parametrize("name", ["conv2", "conv6", "vgg19"])
def test_conv_models_on_28x28_inputs_give_finite_logits(name):
  """Fashion-MNIST's 28x28 images through every pool: odd sizes pool in ceil mode (7 -> 4, 1 -> 1), so
  VGG19's fifth pool sees a 1x1 map instead of pooling it away (which made every logit NaN)."""
  model = create_model(name, width=0.125)
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  assert np.all(np.isfinite(model.apply(variables, x)))
  if name == "conv6":  # 28 -> 14 -> 7 -> 4: fc1 sees 4 x 4 x 32 inputs at width 1/8
    assert variables["params"]["fc1"]["kernel"].shape[0] == 4 * 4 * 32


def test_pool_of_an_odd_map_keeps_the_last_row_and_column():
  """A 3x3 map pools to 2x2: each output the max of its window, the windows cut at the border."""
  model = from_module("odd", PlanNet(plan=(Layer("c", "conv", 1, after="pool"),
                                           Layer("out", "dense", 1, before="flatten", output=True))))
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  variables = init_variables(model, jax.random.key(0), (3, 3, 1))
  kernel = np.zeros((3, 3, 1, 1), np.float32)
  kernel[1, 1] = 1.0  # the identity convolution
  params = {"c": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(1)},
            "out": {"kernel": jnp.asarray([[1.0], [10.0], [100.0], [1000.0]]), "bias": jnp.zeros(1)}}
  out = model.apply({**variables, "params": params}, x)
  # windows: {0,1,3,4} -> 4, {2,5} -> 5, {6,7} -> 7, {8} -> 8
  np.testing.assert_allclose(out, [[4 + 50 + 700 + 8000]])


def test_a_flattened_conv_layer_is_read_by_fc1_at_every_position_of_its_odd_map():
  """On 28x28 inputs Conv-6's third pool sees a 7x7 map: fc1 reads the 4x4 pooled positions of conv6's units
  (the running sums need this), and conv6's activations are the 7x7 map before pooling."""
  model = create_model("conv6", width=0.125, image_shape=(28, 28, 1))
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  info = topology.check(model, "conv6")
  assert (info.consumer, info.positions) == ("fc1", 4 * 4)
  assert topology.activations(model, variables, x, "conv6").shape == (2, 7, 7, 32)

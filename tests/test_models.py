import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redundancy_jax.models import MODELS, activations, count_params, create_model, init_variables, prunable_layers
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
def test_stop_and_start_compose_to_the_full_forward(name):
  model = create_model(name, width=0.25)
  variables = init_variables(model, jax.random.key(0), SHAPES[name])
  x = jax.random.normal(jax.random.key(1), (3, *SHAPES[name]))
  full = model.apply(variables, x)
  for layer in prunable_layers(model):
    h = model.apply(variables, x, stop=layer)
    np.testing.assert_allclose(model.apply(variables, h, start=layer), full, rtol=1e-5, atol=1e-5)


def test_intermediates_are_returned():
  model = create_model("lenet")
  variables = init_variables(model, jax.random.key(0), SHAPES["lenet"])
  logits, acts = activations(model, variables, jnp.ones((2, 28, 28, 1)))
  assert acts["fc1"].shape == (2, 300) and acts["fc2"].shape == (2, 100)
  assert np.all(np.asarray(acts["fc1"]) >= 0)  # after ReLU
  np.testing.assert_allclose(acts["fc3"], logits)


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_builds_with_an_explicit_plan(name):
  """Every name in MODELS builds, and its plan is what the pruning and subspace code rely on: unique
  explicit names conv1..convK then fc1..fcL in network order, each the name of its parameters (plus
  <conv>_bn with BatchNorm) with as many units as the plan says; the last layer is the 10-way classifier
  and the only one that is not prunable."""
  model, variables = _abstract(name)
  kinds = [layer.kind for layer in model.plan]
  k, l = kinds.count("conv"), kinds.count("dense")
  assert kinds == ["conv"] * k + ["dense"] * l and l >= 1
  names = [layer.name for layer in model.plan]
  assert names == [f"conv{i}" for i in range(1, k + 1)] + [f"fc{i}" for i in range(1, l + 1)]
  params = variables["params"]
  batch_norm = {f"{n}_bn" for n in names[:k]} if "batch_stats" in variables else set()
  assert set(params) == set(names) | batch_norm
  for layer in model.plan:
    assert params[layer.name]["kernel"].shape[-1] == layer.features == params[layer.name]["bias"].shape[0]
  assert [layer.output for layer in model.plan] == [False] * (k + l - 1) + [True]
  assert model.plan[-1].features == 10
  assert prunable_layers(model) == tuple(names[:-1])


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
  model = PlanNet(plan=(Layer("c", "conv", 1, after="pool"), Layer("out", "dense", 1, before="flatten", output=True)))
  x = jnp.arange(9.0).reshape(1, 3, 3, 1)
  variables = init_variables(model, jax.random.key(0), (3, 3, 1))
  kernel = np.zeros((3, 3, 1, 1), np.float32)
  kernel[1, 1] = 1.0  # the identity convolution
  params = {"c": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(1)},
            "out": {"kernel": jnp.asarray([[1.0], [10.0], [100.0], [1000.0]]), "bias": jnp.zeros(1)}}
  out = model.apply({**variables, "params": params}, x)
  # windows: {0,1,3,4} -> 4, {2,5} -> 5, {6,7} -> 7, {8} -> 8
  np.testing.assert_allclose(out, [[4 + 50 + 700 + 8000]])


def test_dense_input_pools_as_the_network_does_on_odd_maps():
  """The sweeps rebuild fc1's input from the last conv activation (`dense_input`); on 28x28 inputs Conv-6's
  third pool sees a 7x7 map, and the rebuilt input must be the one the network flattens (4x4, not 3x3)."""
  from redundancy_jax.models import dense_input

  model = create_model("conv6", width=0.125)
  variables = init_variables(model, jax.random.key(0), (28, 28, 1))
  x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
  h = model.apply(variables, x, stop="conv6")
  assert h.shape == (2, 7, 7, 32)
  fc1 = variables["params"]["fc1"]
  rebuilt = jax.nn.relu(dense_input(model, "conv6", "fc1", h) @ fc1["kernel"] + fc1["bias"])
  np.testing.assert_allclose(rebuilt, model.apply(variables, x, stop="fc1"), rtol=1e-5, atol=1e-6)

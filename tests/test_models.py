import jax
import jax.numpy as jnp
import numpy as np
import pytest

from redundancy_jax.models import MODELS, activations, count_params, create_model, init_variables, prunable_layers

SHAPES = {"lenet": (28, 28, 1), "conv2": (32, 32, 3), "conv4": (32, 32, 3), "conv6": (32, 32, 3), "vgg19": (32, 32, 3)}


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

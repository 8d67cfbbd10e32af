"""Model registry: `MODELS` names every model, `create_model` builds one.

>>> model = create_model("lenet")
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
>>> logits = model.apply(variables, images, train=False)
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from redundancy_jax.models.common import Layer, PlanNet, max_pool, normalize
from redundancy_jax.models.convnets import conv2, conv4, conv6
from redundancy_jax.models.lenet import lenet, mlp
from redundancy_jax.models.vgg import vgg19
from redundancy_jax.core.errors import BadOption

_BUILDERS: dict[str, Callable[..., PlanNet]] = {
  "lenet": lenet,
  "conv2": conv2,
  "conv4": conv4,
  "conv6": conv6,
  "vgg19": vgg19,
  "mlp": mlp,
}
MODELS: tuple[str, ...] = tuple(_BUILDERS)

# The dataset each model is trained on in the report (DEFINITIONS.md section 1).
DEFAULT_DATASET = {"lenet": "mnist", "mlp": "mnist", "conv2": "cifar10", "conv4": "cifar10", "conv6": "cifar10", "vgg19": "cifar10"}


def create_model(
  name: str,
  num_classes: int = 10,
  *,
  mean: Sequence[float] = (0.0,),
  std: Sequence[float] = (1.0,),
  **options: Any,
) -> PlanNet:
  """Builds model `name` (one of `MODELS`) that standardises its input by `mean` and `std` (per channel,
  of the training data). Options: `width` (multiplier), `batch_norm`."""
  if name not in _BUILDERS:
    raise BadOption(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
  model = _BUILDERS[name](num_classes=num_classes, **options)
  return model.clone(mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def init_variables(model: PlanNet, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
  """Initial variables (params, and batch_stats where the model has BatchNorm) for one image shape."""
  return dict(model.init(key, jnp.zeros((1, *image_shape), jnp.float32)))


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def activations(model: PlanNet, variables: dict, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Logits and every layer's activation (after ReLU, before pooling), keyed by layer name."""
  logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
  acts = {name[: -len("_act")]: value[0] for name, value in state["intermediates"].items()}
  return logits, acts


# ----------------------------------------------------------------------------- topology: the plan only


def layer_names(model: PlanNet) -> tuple[str, ...]:
  """Every layer's name, in network order."""
  return tuple(layer.name for layer in model.plan)


def prunable_layers(model: PlanNet) -> tuple[str, ...]:
  """Names of the layers whose units may be removed: every layer but the classifier."""
  return tuple(layer.name for layer in model.plan if not layer.output)


def check_layer(model: PlanNet, name: str, *, prunable: bool = False, error: type = ValueError) -> Layer:
  """The plan entry of layer `name`; `error` listing the valid layers when it does not exist or, with
  `prunable`, when it is the output layer."""
  valid = prunable_layers(model) if prunable else layer_names(model)
  what = "prunable layers" if prunable else "layers"
  for layer in model.plan:
    if layer.name == name:
      if prunable and layer.output:
        raise error(f"layer {name!r} is the output layer, which is not prunable; {what}: {', '.join(valid)}")
      return layer
  raise error(f"unknown layer {name!r}; {what}: {', '.join(valid)}")


def layer_of(model: PlanNet, name: str) -> Layer:
  """The plan entry of layer `name`, with an error listing the layers when it does not exist."""
  return check_layer(model, name)


def next_layer(model: PlanNet, name: str) -> str:
  """The layer that reads layer `name`'s units (`name` must be prunable)."""
  names = layer_names(model)
  return names[names.index(check_layer(model, name, prunable=True).name) + 1]


def previous_layer(model: PlanNet, name: str) -> str | None:
  """The layer whose activation layer `name` reads; None for the first layer (it reads the input)."""
  names = layer_names(model)
  index = names.index(check_layer(model, name).name)
  return names[index - 1] if index else None


def input_of(model: PlanNet, prev: str | None, layer: str, h: jax.Array) -> jax.Array:
  """Layer `prev`'s activation `h` as layer `layer` reads it, before any flatten: `prev`'s 2x2
  max-pool, then `layer`'s global average pool. With `prev=None`, `h` is the raw network input, which
  the model standardises first."""
  if prev is None:
    h = normalize(h, model.mean, model.std)
  elif layer_of(model, prev).after == "pool":
    h = max_pool(h)
  if layer_of(model, layer).before == "gap":
    h = jnp.mean(h, axis=(1, 2))
  return h


def dense_input(model: PlanNet, prev: str | None, layer: str, h: jax.Array) -> jax.Array:
  """Dense `layer`'s input from the previous layer's activation `h`, flattened as `PlanNet` does."""
  h = input_of(model, prev, layer, h)
  return h.reshape(h.shape[0], -1)

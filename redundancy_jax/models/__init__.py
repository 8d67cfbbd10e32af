"""Model registry: `MODELS` names every model, `create_model` builds one.

>>> model = create_model("lenet")
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
>>> logits = model.apply(variables, images, train=False)
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from redundancy_jax.models.common import Layer, PlanNet
from redundancy_jax.models.convnets import conv2, conv4, conv6
from redundancy_jax.models.lenet import lenet
from redundancy_jax.models.vgg import vgg19

_BUILDERS: dict[str, Callable[..., PlanNet]] = {
  "lenet": lenet,
  "conv2": conv2,
  "conv4": conv4,
  "conv6": conv6,
  "vgg19": vgg19,
}
MODELS: tuple[str, ...] = tuple(_BUILDERS)

# The dataset each model is trained on in the report (SPEC section 1).
DEFAULT_DATASET = {"lenet": "mnist", "conv2": "cifar10", "conv4": "cifar10", "conv6": "cifar10", "vgg19": "cifar10"}


def create_model(name: str, num_classes: int = 10, **options: Any) -> PlanNet:
  """Builds model `name` (one of `MODELS`). Options: `width` (multiplier), `batch_norm`."""
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
  return _BUILDERS[name](num_classes=num_classes, **options)


def init_variables(model: PlanNet, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
  """Initial variables (params, and batch_stats where the model has BatchNorm) for one image shape."""
  return dict(model.init(key, jnp.zeros((1, *image_shape), jnp.float32)))


def prunable_layers(model: PlanNet) -> tuple[str, ...]:
  """Names of the layers whose units may be removed: every layer but the classifier."""
  return tuple(layer.name for layer in model.plan if not layer.output)


def layer_of(model: PlanNet, name: str) -> Layer:
  """The plan entry of layer `name`, with an error listing the layers when it does not exist."""
  for layer in model.plan:
    if layer.name == name:
      return layer
  raise ValueError(f"unknown layer {name!r}; layers: {', '.join(l.name for l in model.plan)}")


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def activations(model: PlanNet, variables: dict, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Logits and every layer's activation (after ReLU, before pooling), keyed by layer name."""
  logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
  acts = {name[: -len("_act")]: value[0] for name, value in state["intermediates"].items()}
  return logits, acts


def input_of(model: PlanNet, prev: str | None, layer: str, h: jax.Array) -> jax.Array:
  """Layer `prev`'s activation `h` as layer `layer` reads it, before any flatten: `prev`'s 2x2
  max-pool, then `layer`'s global average pool. With `prev=None`, `h` is the network input."""
  if prev is not None and layer_of(model, prev).after == "pool":
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  if layer_of(model, layer).before == "gap":
    h = jnp.mean(h, axis=(1, 2))
  return h

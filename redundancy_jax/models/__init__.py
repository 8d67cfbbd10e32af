"""Model registry: `MODELS` names the report's models, `create_model` makes a `Network` of a registered name or of
a user's factory (`FILE.py:NAME`, `MODULE:NAME`). Adding a model to the library is one file returning a
Flax module and one entry in `_BUILDERS`.

>>> net = create_model("lenet", mean=ds.mean, std=ds.std, image_shape=ds.image_shape)
>>> variables = net.init(jax.random.key(0), (28, 28, 1))
>>> logits = net.apply(variables, images)
"""

from typing import Any, Callable, Sequence

import jax

from redundancy_jax.core.data import IMAGE_SHAPES
from redundancy_jax.core.errors import BadOption
from redundancy_jax.models import topology
from redundancy_jax.models.convnets import conv2, conv4, conv6
from redundancy_jax.models.lenet import lenet, mlp
from redundancy_jax.models.network import Network, build_user, from_module, is_factory_spec, normalize  # noqa: F401
from redundancy_jax.models.vgg import vgg19

_BUILDERS: dict[str, Callable[..., Any]] = {
  "lenet": lenet,
  "conv2": conv2,
  "conv4": conv4,
  "conv6": conv6,
  "vgg19": vgg19,
  "mlp": mlp,
}
MODELS: tuple[str, ...] = tuple(_BUILDERS)

# The dataset each model is trained on in the report (DEFINITIONS.md section 1); a user's model: mnist.
DEFAULT_DATASET = {"lenet": "mnist", "mlp": "mnist", "conv2": "cifar10", "conv4": "cifar10", "conv6": "cifar10",
                   "vgg19": "cifar10"}


def check_model(spec: str) -> str:
  """`spec` if it names a registered model or has the form of a factory, else an error naming both."""
  if spec in _BUILDERS or is_factory_spec(spec):
    return spec
  raise BadOption(f"unknown model {spec!r}; valid: a registered model ({', '.join(MODELS)}) or your own Flax model "
                  f"as FILE.py:FACTORY or MODULE:FACTORY (a callable factory(num_classes))")


def create_model(
  spec: str,
  num_classes: int = 10,
  *,
  mean: Sequence[float] = (0.0,),
  std: Sequence[float] = (1.0,),
  image_shape: Sequence[int] = (),
  seed: int = 0,
  **options: Any,
) -> Network:
  """The network `spec` names, standardising its input by `mean` and `std` (per channel, of the training
  data) and traced at `image_shape` (one input's H, W, C; a registered model's default: its dataset's). Options of the registered models: `width`
  (multiplier), `batch_norm`; a user's factory is called as `factory(num_classes)` (with `rngs` when it
  takes them: `network.build_user`)."""
  check_model(spec)
  if not image_shape and not is_factory_spec(spec):
    image_shape = IMAGE_SHAPES[DEFAULT_DATASET[spec]]
  if is_factory_spec(spec):
    return build_user(spec, num_classes, mean=mean, std=std, image_shape=image_shape, seed=seed)
  return from_module(spec, _BUILDERS[spec](num_classes=num_classes, **options), mean=mean, std=std,
                     image_shape=image_shape)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def from_config(cfg, dataset=None, num_classes: int | None = None) -> Network:
  """The network a resolved `TrainConfig` trains, standardising by the dataset's mean and std (without a
  dataset: its image shape, 10 classes and no standardisation, enough to find its layers before any data
  is read); `num_classes` overrides the dataset's (a replica of a class-subset run as the C-output
  network it is)."""
  options = {} if is_factory_spec(cfg.model) else {"width": cfg.width} | (
    {} if cfg.model in ("lenet", "mlp") else {"batch_norm": cfg.batch_norm})
  if dataset is None:
    return create_model(cfg.model, 10, image_shape=IMAGE_SHAPES[cfg.dataset], seed=cfg.seed, **options)
  return create_model(cfg.model, num_classes or dataset.num_classes, mean=dataset.mean, std=dataset.std,
                      image_shape=dataset.image_shape, seed=cfg.seed, **options)


def init_variables(net: Network, key, image_shape) -> dict:
  """Initial variables ({"params"}, and "batch_stats" with BatchNorm) of `net` for one image shape."""
  return net.init(key, image_shape)


def layer_names(net: Network) -> tuple[str, ...]:
  """Every Dense and Conv layer's name, in call order (`topology.names`)."""
  return topology.names(net)


def prunable_layers(net: Network) -> tuple[str, ...]:
  """The layers whose units can be removed exactly (`topology.names(prunable=True)`)."""
  return topology.names(net, prunable=True)

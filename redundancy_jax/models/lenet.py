"""LeNet-300-100 (LeCun et al. 1998), and the one-hidden-layer network of the width study (Neyshabur et
al. 2019): multilayer perceptrons on flattened images."""

from redundancy_jax.models.common import PlanNet, dense_head
from redundancy_jax.core.errors import BadOption


def lenet(num_classes: int = 10, width: float = 1.0, batch_norm: bool = False) -> PlanNet:
  """Dense 300-100-`num_classes`; `width` scales the hidden layers. No BatchNorm (dense only)."""
  if batch_norm:
    raise BadOption("lenet has no convolutions, so it has no BatchNorm option")
  return PlanNet(plan=tuple(dense_head((300, 100), num_classes, width, before="flatten")))


def mlp(num_classes: int = 10, width: float = 1.0, batch_norm: bool = False) -> PlanNet:
  """One hidden ReLU layer of round(`width`) units (`--width` is the unit count), then the classifier."""
  if batch_norm:
    raise BadOption("mlp has no convolutions, so it has no BatchNorm option")
  return PlanNet(plan=tuple(dense_head((1,), num_classes, width, before="flatten")))

"""Conv-2 / Conv-4 / Conv-6 (Frankle and Carbin 2018): VGG-like nets with a 256-256 dense head."""

from redundancy_jax.models.common import PlanNet, conv_stack, dense_head

_STAGES = {
  "conv2": ((64, 64),),
  "conv4": ((64, 64), (128, 128)),
  "conv6": ((64, 64), (128, 128), (256, 256)),
}


def _convnet(name: str, num_classes: int, width: float, batch_norm: bool) -> PlanNet:
  plan = conv_stack(_STAGES[name], width) + dense_head((256, 256), num_classes, width, "flatten")
  return PlanNet(plan=tuple(plan), batch_norm=batch_norm)


def conv2(num_classes: int = 10, width: float = 1.0, batch_norm: bool = False) -> PlanNet:
  """Two 64-filter convolutions, a pool, dense 256-256-`num_classes`."""
  return _convnet("conv2", num_classes, width, batch_norm)


def conv4(num_classes: int = 10, width: float = 1.0, batch_norm: bool = False) -> PlanNet:
  """Convolutions 64-64-pool-128-128-pool, dense 256-256-`num_classes`."""
  return _convnet("conv4", num_classes, width, batch_norm)


def conv6(num_classes: int = 10, width: float = 1.0, batch_norm: bool = False) -> PlanNet:
  """Convolutions 64-64-pool-128-128-pool-256-256-pool, dense 256-256-`num_classes`."""
  return _convnet("conv6", num_classes, width, batch_norm)

"""VGG-19 for CIFAR-10 as in the lottery-ticket paper: 16 convolutions, global average pool, 512-512-10."""

from redundancy_jax.models.common import PlanNet, conv_stack, dense_head

_STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def vgg19(num_classes: int = 10, width: float = 1.0, batch_norm: bool = True) -> PlanNet:
  """VGG-19 with BatchNorm after every convolution (switch off with `batch_norm=False`)."""
  plan = conv_stack(_STAGES, width) + dense_head((512, 512), num_classes, width, before="gap")
  return PlanNet(plan=tuple(plan), batch_norm=batch_norm)

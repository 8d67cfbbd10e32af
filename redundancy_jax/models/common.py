"""A named-layer plan and the one Flax module that runs it.

Every model of the report is a chain of layers (conv or dense, each followed by optional BatchNorm
and ReLU, optionally by a 2x2 max-pool, a flatten or a global average pool), written as a plan of
`Layer`s that one module runs.

Which layer reads which, and what removing a unit means, is found from the traced model like for any
other network (`models/topology.py`); the plan only builds it.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from redundancy_jax.models.conv import conv_general_dilated

KERNEL_INIT = nn.initializers.glorot_normal()  # every Dense and Conv kernel (biases start at zero)


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of a plan: `kind` is "conv" or "dense"; `before` and `after` reshape around it."""

  name: str
  kind: str
  features: int
  before: str = ""  # "" | "flatten" | "gap" (global average pool)
  after: str = ""  # "" | "pool" (2x2 max-pool, stride 2)
  output: bool = False  # the classifier: no ReLU, not prunable


def scaled(width: int, multiplier: float) -> int:
  """A hidden width times the model's width multiplier, at least one unit."""
  return max(1, int(round(width * multiplier)))


def max_pool(x: jax.Array) -> jax.Array:
  """The plans' 2x2 max-pool with stride 2 (NHWC). An odd size pools in ceil mode (7 -> 4, 1 -> 1; the
  last window is cut at the border), so 28x28 inputs pass VGG19's five pools (valid pooling: 1 -> 0)."""
  n, h, w, c = x.shape
  if h % 2 or w % 2:  # pad with -inf: no window is only padding
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return _max_pool_even(x)[:, : (h + 1) // 2, : (w + 1) // 2]
  return _max_pool_even(x)


@jax.custom_vjp
def _max_pool_even(x):
  """The max of every 2x2 window, as a reshape: `reduce_window`'s select-and-scatter gradient is 20x
  slower on CPU (44 ms against 2 ms for Conv-2's 64 x 32 x 32 x 64 activation). The gradient goes to the
  first maximum of each window in row-major order, as `reduce_window`'s does (equal bit for bit, ties
  included); the forward keeps which corner that is (int8), so the backward reads no activation."""
  return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
  n, h, w, c = x.shape
  v = x.reshape(n, h // 2, 2, w // 2, 2, c)
  corners = jnp.stack([v[:, :, i, :, j] for i in (0, 1) for j in (0, 1)], -1)
  # the first maximum's corner as a reduction, so that XLA computes it once here rather than fusing it
  # (and the activation it reads) into every element of the gradient
  return jnp.max(corners, -1), jnp.argmax(corners, -1).astype(jnp.int8)


def _max_pool_bwd(corner, g):
  n, h2, w2, c = g.shape
  position = (2 * jnp.arange(2)[:, None] + jnp.arange(2)[None, :]).astype(jnp.int8)  # the corners, row-major
  chosen = corner[:, :, None, :, None, :] == position[None, None, :, None, :, None]
  dx = jnp.where(chosen, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
  return (dx.reshape(n, 2 * h2, 2 * w2, c),)


_max_pool_even.defvjp(_max_pool_fwd, _max_pool_bwd)


class PlanNet(nn.Module):
  """Runs a plan of layers: `apply(variables, x, train=False)` on standardised NHWC images (the
  `Network` around it standardises them: `models/network.py`)."""

  plan: tuple[Layer, ...]
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for layer in self.plan:
      x = self._layer(layer, x, train)
      if layer.after == "pool":
        x = max_pool(x)
    return x

  def _layer(self, layer: Layer, x: jax.Array, train: bool) -> jax.Array:
    if layer.before == "flatten":
      x = x.reshape(x.shape[0], -1)
    elif layer.before == "gap":
      x = jnp.mean(x, axis=(1, 2))
    init = dict(kernel_init=KERNEL_INIT, bias_init=nn.initializers.zeros)
    if layer.kind == "conv":
      x = nn.Conv(layer.features, (3, 3), padding="SAME", name=layer.name, conv_general_dilated=conv_general_dilated,
                  **init)(x)
      if self.batch_norm:
        x = nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"{layer.name}_bn"
        )(x)
    else:
      x = nn.Dense(layer.features, name=layer.name, **init)(x)
    return x if layer.output else nn.relu(x)


def dense_head(widths: Sequence[int], num_classes: int, multiplier: float, before: str) -> list[Layer]:
  """The fully connected layers fc1..fcK ending in the classifier."""
  head = [
    Layer(f"fc{i + 1}", "dense", scaled(w, multiplier), before=before if i == 0 else "")
    for i, w in enumerate(widths)
  ]
  head.append(Layer(f"fc{len(widths) + 1}", "dense", num_classes, output=True))
  if not widths:
    head[0] = dataclasses.replace(head[0], before=before)
  return head


def conv_stack(stages: Sequence[Sequence[int]], multiplier: float) -> list[Layer]:
  """Convolutions conv1..convK; each stage of widths ends with a 2x2 max-pool."""
  layers, index = [], 0
  for stage in stages:
    for position, width in enumerate(stage):
      index += 1
      after = "pool" if position == len(stage) - 1 else ""
      layers.append(Layer(f"conv{index}", "conv", scaled(width, multiplier), after=after))
  return layers

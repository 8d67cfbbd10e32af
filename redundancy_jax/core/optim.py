"""The training run's optimizer (DEFINITIONS.md section 1), and masks kept inside it (lottery tickets).

  tx = make_optimizer(cfg)                      # the recipe's SGD / momentum / Adam, drops, weight decay
  tx = make_optimizer(cfg, masked=True)         # + keep_masked: masked weights stay exactly zero
"""

from __future__ import annotations

import typing
from typing import Any

import jax
import jax.numpy as jnp
import optax

from redundancy_jax.models import topology

OPTIMIZERS = ("sgd", "momentum", "adam")


def make_optimizer(cfg, *, masked: bool = False) -> optax.GradientTransformation:
  """The recipe's optimizer: SGD, SGD with momentum 0.9, or Adam; step drops; L2 weight decay. With
  `masked`, wrapped by `keep_masked` (lottery tickets)."""
  schedule = optax.piecewise_constant_schedule(
    cfg.learning_rate, {int(cfg.steps * f): 0.1 for f in cfg.lr_drops}
  )
  if cfg.optimizer == "adam":
    tx = optax.adam(schedule)
  else:
    tx = optax.sgd(schedule, momentum=0.9 if cfg.optimizer == "momentum" else None)
  if cfg.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
  return keep_masked(tx) if masked else tx


class MaskedState(typing.NamedTuple):
  masks: Any  # {layer name: bool array shaped like its kernel}
  inner: Any


def apply_masks(tree, masks):
  """`tree` (parameters, gradients or updates) with each masked layer's kernel multiplied by its mask
  ({layer name: mask}); layers without a mask, and every bias, unchanged."""
  for name, mask in masks.items():
    path = (*name.split("/"), "kernel")
    kernel = topology.get(tree, path)
    tree = topology.replace(tree, path, kernel * mask.astype(kernel.dtype))
  return tree


def keep_masked(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` whose updates are zero wherever the mask in its state is False (jaxpruner's way: the masks live
  in the optimizer state, so the step and the data know nothing of them, and checkpoints keep them). A
  masked weight that starts at zero stays exactly zero, also under Adam and weight decay. `init` masks
  nothing; `set_masks` puts a run's masks in."""

  def init(params):
    masks = {name: jnp.ones(jnp.shape(topology.get(params, (*name.split("/"), "kernel"))), bool)
             for name in topology.kernel_layers(params)}
    return MaskedState(masks, tx.init(params))

  def update(updates, state, params=None):
    inner_updates, inner = tx.update(updates, state.inner, params)  # elementwise: the kept weights' as without masks
    return apply_masks(inner_updates, state.masks), MaskedState(state.masks, inner)

  return optax.GradientTransformation(init, update)


def set_masks(opt_state: MaskedState, masks) -> MaskedState:
  return MaskedState(jax.tree.map(lambda m: jnp.asarray(m, bool), masks), opt_state.inner)

"""Structured pruning (DEFINITIONS.md sections 2 and 8): scores -> removal order -> nested masks -> exact
removal -> sweep, on any network (`models.Network`).

Every piece is a pure function of arrays or parameter pytrees:

  W = unit_matrix(variables, "fc1")                     # (m, n): one row per unit
  order = removal_order(W, "max_fp")                     # int32[m], first removed first (analyses/criteria.py)
  keep = level_masks(order, jnp.arange(m + 1))           # bool[m + 1, m], True = kept
  pruned = jax.vmap(lambda k: remove_units(net, variables, "fc1", k))(keep)
  results = sweep(net, variables, "fc1", x, y, {"max_fp": order, ...})

Removal is exact: a removed unit's output is zero wherever it is consumed. `remove_units` masks the
parameter pytree (the kernel's output slice, the bias, and the scale and offset of the BatchNorm that
follows); `sweep` computes the same networks without forming them: it multiplies the layer's output
(after that BatchNorm) by the mask, or, when one Dense layer reads the units, builds that layer's
pre-activation as running sums over the removal order (`models/topology.py` says which applies).

Orders come from the criteria registry (`analyses/criteria.py`); the weight-based ones are computed on
the host in float64 from the stored weights, so they do not depend on the accelerator's matmul precision
(TF32/bf16) and ties are decided on values, not on rounding noise.
`prune_sweep.compare_criteria` runs every criterion through `sweep` (the report's Figure 2).
"""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.analyses import criteria
from redundancy_jax.core import variants
from redundancy_jax.models import Network, topology
from redundancy_jax.core.errors import BadOption


class PruningError(BadOption):
  """A pruning request that cannot be carried out (bad layer, levels, weights or checkpoint)."""


# ----------------------------------------------------------------------------- checks


def check_finite(W, layer: str) -> None:
  """Raises naming the layer when its weights hold NaN or infinity."""
  if not np.isfinite(np.asarray(W)).all():
    raise PruningError(f"layer {layer!r} has non-finite weights (NaN or inf); was training diverging?")


def check_prunable(net: Network, layer: str) -> topology.LayerInfo:
  """The layer's info; an error listing the prunable layers for an unknown layer, or giving the reason when
  its units cannot be removed exactly (the classifier, a LayerNorm after it, ...)."""
  return topology.check(net, layer, prunable=True, error=PruningError)


# ----------------------------------------------------------------------------- orders


def removal_order(W, criterion: str, *, key: jax.Array | None = None) -> np.ndarray:
  """A permutation of the m units of `W` (m, n), the first removed first, as int32, by a criterion that
  reads only the weights (or a random `key`): `criteria.get(criterion).order` on `W`. Ties go to the lower
  index. Data-aware criteria need the network and data: `criteria.Evidence`."""
  return criteria.get(criterion).order(criteria.Evidence.of_weights(W), key)


def levels(m: int, step: int = 1) -> np.ndarray:
  """Every `step`-th removal level of a layer of m units, always with 0 and m."""
  return np.unique(np.concatenate([np.arange(0, m + 1, max(1, step)), [m]])).astype(np.int32)


def check_levels(levels, m: int) -> np.ndarray:
  """Levels as int array: within 0..m and strictly increasing, else an error."""
  levels = np.asarray(levels)
  if levels.ndim != 1 or len(levels) == 0:
    raise PruningError("levels must be a non-empty 1-d list of unit counts")
  if levels.min() < 0 or levels.max() > m:
    raise PruningError(f"levels must lie in 0..{m} (the layer has {m} units); got {levels.min()}..{levels.max()}")
  if np.any(np.diff(levels) <= 0):
    raise PruningError("levels must be strictly increasing")
  return levels.astype(np.int32)


def level_masks(order, levels) -> jax.Array:
  """bool[len(levels), m]: row p keeps every unit except the first levels[p] of `order`."""
  order = jnp.asarray(order)
  m = order.shape[0]
  rank = jnp.zeros(m, jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
  return rank[None, :] >= jnp.asarray(levels)[:, None]


# ----------------------------------------------------------------------------- removal


def remove_units(net: Network, variables: Mapping, layer: str, keep: jax.Array) -> dict:
  """Exactly removes the units of `layer` where `keep` is False, by masking the parameter pytree: the
  kernel's output slice, the bias, and the scale and offset of the BatchNorm that directly follows (so
  that the unit's output is zero after it). Its batch statistics pass through. Pure and vmappable over
  `keep`."""
  info = check_prunable(net, layer)
  params = variables["params"]
  path = layer.split("/")
  group = topology.get(params, path)
  keep = jnp.asarray(keep)
  masked = {k: v * keep.astype(v.dtype) if k in ("kernel", "bias") else v for k, v in group.items()}
  params = topology.replace(params, path, masked)
  if info.norm is not None:
    norm_path = info.norm.split("/")
    norm = topology.get(params, norm_path)
    params = topology.replace(params, norm_path, {k: v * keep.astype(v.dtype) if k in ("scale", "bias") else v
                                                  for k, v in norm.items()})
  return {**variables, "params": params}


# ----------------------------------------------------------------------------- the sweep


def _conv_contributions(h, kernel, conv: dict):
  """(m, *output shape) what each of the m input channels of a convolution adds to its output, with the
  consumer's own strides, padding and kernel dilation (NHWC input, HWIO kernel): a sum over the kernel's
  window of the input shifted by each offset times that offset's (m, out) kernel slice, as one outer
  product per offset. (A convolution grouped by channel computes the same, 7x slower on XLA:CPU.)"""
  kh, kw, m, out = kernel.shape
  (sh, sw), (dh, dw) = conv["window_strides"], conv["rhs_dilation"]
  (pt, pb), (pl, pr) = conv["padding"]
  xp = jnp.pad(h, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  rows = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
  cols = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
  total = 0.0
  for i in range(kh):
    for j in range(kw):
      shifted = xp[:, i * dh: i * dh + sh * (rows - 1) + 1: sh, j * dw: j * dw + sw * (cols - 1) + 1: sw, :]
      total = total + jnp.einsum("nhwm,mo->mnhwo", shifted, kernel[i, j])
  return total


def _unit_contributions(net, cut, variables, aux, captured):
  """`prepare` of the running sums: what each of the pruned layer's units adds to the pre-activation of
  the one Dense or Conv layer reading them (its input: rows x (positions x units), channel last). One
  position per unit: (activations rows x m, kernel m x out), products formed when needed; several
  (flattened conv channels): contracted over positions once for all units, (m, rows, out); a Conv
  reading them: its convolution grouped by unit (`_conv_contributions`), (m, rows, out)."""
  m = topology.kernel(variables, cut.source).shape[-1]
  h = captured[0]
  if cut.static:  # a Conv reads them: its convolution's parameters
    per_unit = _conv_contributions(h, topology.kernel(variables, cut.layer), dict(cut.static))
    return {"per_unit": per_unit.reshape(m, -1, per_unit.shape[-1])}
  inputs_RxPxM = h.reshape(-1, h.shape[-1] // m, m)
  kernel = topology.kernel(variables, cut.layer)
  kernel_PxMxO = kernel.reshape(-1, m, kernel.shape[-1])
  if inputs_RxPxM.shape[1] == 1:
    return {"acts": inputs_RxPxM[:, 0], "kernel": kernel_PxMxO[0]}
  return {"per_unit": jnp.einsum("npm,pmo->mno", inputs_RxPxM, kernel_PxMxO)}


def _running_sums(net, cut, variables, aux, inputs, y, order, tail):
  """`score` of one removal order at every level: walking the order backwards from level m (nothing
  kept) to level 0, each level's pre-activation of the reading layer is the previous one plus one unit's
  contribution; the network after that layer runs once per level (`tail`)."""
  if "per_unit" in inputs:
    contribution = lambda u: inputs["per_unit"][u]
  else:
    contribution = lambda u: inputs["acts"][:, u, None] * inputs["kernel"][u][None, :]
  group = topology.get(variables["params"], cut.layer.split("/"))
  out = topology.kernel(variables, cut.layer).shape[-1]
  bias = group["bias"] if "bias" in group else jnp.zeros((out,), jnp.float32)
  m = order.shape[0]
  n = (inputs["acts"] if "acts" in inputs else inputs["per_unit"][0]).shape[0]

  def evaluate(z_RxO):  # (rows, out): `tail` takes it in the layer's output shape
    return variants.loss_and_correct(tail(z_RxO), y)

  def add_unit(z, p):  # level p keeps order[p:], so it adds order[p] to level p + 1
    z = z + contribution(order[p])
    return z, evaluate(z)

  z_top = jnp.broadcast_to(bias, (n, bias.shape[0]))
  _, (loss, correct) = jax.lax.scan(add_unit, z_top, jnp.arange(m - 1, -1, -1))
  top_loss, top_correct = evaluate(z_top)
  levels = aux["levels"]
  loss = jnp.concatenate([loss[::-1], top_loss[None]])[levels]  # back to level order 0..m
  correct = jnp.concatenate([correct[::-1], top_correct[None]])[levels]
  return loss, correct


def _masked_rest(net, cut, variables, aux, inputs, y, mask, tail):
  """`score` of one unit mask: the network with the layer's output (after its BatchNorm) masked."""
  del net, cut, variables, aux, inputs
  return variants.loss_and_correct(tail(mask), y)


def _sweep_pass(net, layer, orders, levels, data_chunk, mask_chunk, nested):
  """(levels, the `variants.Pass`, its variants, aux) of a sweep: one removal order per variant for the
  running sums (aux: the levels), one (order, level) mask per variant otherwise."""
  info = check_prunable(net, layer)
  m = info.units
  levels = check_levels(np.arange(m + 1) if levels is None else levels, m)
  orders_CxM = jnp.stack([jnp.asarray(o, jnp.int32) for o in orders.values()])
  sums = info.consumer_kind == "dense" or _groupable(info.conv)  # a consumer the running sums apply to
  if nested is None:
    nested = sums
  if nested and not sums:
    raise PruningError(f"layer {layer!r}: running sums need one Dense or Conv layer reading its units, and it has "
                       f"none")
  if nested:  # the orders in vmapped batches of at most 16, evenly (no padding order): 1.4x faster on CPU
    batch = -(-len(orders_CxM) // -(-len(orders_CxM) // 16))
    conv = info.conv if info.consumer_kind == "conv" else ()
    cut = variants.Cut("output", info.consumer, capture=(info.consumer,), source=layer, static=conv)
    chunk = data_chunk or (2048 if not conv else _conv_chunk(net, info, conv))
    spec = variants.Pass(cut, _unit_contributions, _running_sums, batch, chunk)
    return levels, spec, orders_CxM, {"levels": jnp.asarray(levels)}
  masks = jax.vmap(lambda o: level_masks(o, levels))(orders_CxM).reshape(-1, m)  # order-major
  cut = variants.Cut("mask", layer, at=info.norm or layer)
  return levels, variants.Pass(cut, variants.keep_inputs, _masked_rest, mask_chunk, data_chunk or 250), masks, None


def _groupable(conv: tuple) -> bool:
  """Whether a Conv consumer's convolution can be grouped by input channel (`_conv_contributions`)."""
  c = dict(conv)
  return bool(c) and c["feature_group_count"] == 1 and c["batch_group_count"] == 1 and (
    tuple(c["lhs_dilation"]) == (1, 1) and tuple(c["dimension_numbers"].lhs_spec) == (0, 3, 1, 2)
    and tuple(c["dimension_numbers"].rhs_spec) == (3, 2, 0, 1))  # NHWC, HWIO, no input dilation


def _conv_chunk(net, info, conv, budget: int = 2**28) -> int:
  """Images per data chunk so that a Conv consumer's per-unit contributions (m x its output) stay within
  `budget` bytes."""
  shape = jax.eval_shape(lambda v, x: variants._layer_output(net, v, x, info.consumer),
                         jax.eval_shape(lambda: net.init(jax.random.key(0), net.image_shape)),
                         jax.ShapeDtypeStruct((1, *net.image_shape), jnp.float32)).shape
  return int(max(8, min(2048, budget // (4 * info.units * math.prod(shape)))))


def lower_sweep(net: Network, variables: Mapping, layer: str, x, y, orders, levels=None, *, data_chunk=None,
                mask_chunk: int = 16, nested: bool | None = None):
  """`sweep` as the one program of the accelerator form, lowered, not run (see `variants.lower`)."""
  _, spec, variants_V, aux = _sweep_pass(net, layer, orders, levels, data_chunk, mask_chunk, nested)
  return variants.lower(net, variables, x, y, spec, variants_V, aux)


def sweep(
  net: Network,
  variables: Mapping,
  layer: str,
  x,
  y,
  orders: Mapping[str, jax.Array],
  levels=None,
  *,
  data_chunk: int | None = None,
  mask_chunk: int = 16,
  nested: bool | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """Accuracy and mean loss on (x, y) for every order in `orders` and every level (default 0..m).

  One batched computation through `variants.evaluate`: per data chunk the network up to `layer` (and the
  paths around it) runs once; when one Dense layer reads its units (`nested`, default automatic) the
  nested masks turn its pre-activation into running sums, for a batch of orders at a time; otherwise the
  rest of the network runs vmapped over batches of `mask_chunk` masks. Memory is bounded by `data_chunk`
  images (default 2,048 for the running sums, 250 when masks are batched) times the batch.
  """
  levels, spec, variants_V, aux = _sweep_pass(net, layer, orders, levels, data_chunk, mask_chunk, nested)
  totals = variants.evaluate(net, variables, x, y, spec, variants_V, aux)
  loss, correct = (a.reshape(len(orders), len(levels)) for a in totals)
  names = list(orders)
  n = len(y)
  loss, acc = np.asarray(loss) / n, np.asarray(correct) / n
  return {name: {"accuracy": acc[i], "loss": loss[i], "levels": levels} for i, name in enumerate(names)}

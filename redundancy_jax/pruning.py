"""Structured pruning (SPEC section 2): scores -> removal order -> nested masks -> exact removal -> sweep.

Every piece is a pure function of arrays or parameter pytrees:

  W = unit_matrix(params, "fc1")                        # (m, n): one row per unit
  order = removal_order(W, "max_fp")                     # int32[m], first removed first
  keep = level_masks(order, jnp.arange(m + 1))           # bool[m + 1, m], True = kept
  pruned = jax.vmap(lambda k: remove_units(params, "fc1", k))(keep)
  results = sweep(model, variables, "fc1", x, y, {"max_fp": order, ...})

Removal is exact: a removed unit's slice of the *next* layer's input weights is zeroed, so neither its
ReLU(bias) nor a BatchNorm shift reaches the rest of the network (SPEC section 2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from redundancy_jax.data import normalize
from redundancy_jax.models import PlanNet, input_of, layer_of, prunable_layers

CRITERIA = ("max_mag", "min_mag", "max_fp", "min_fp", "random")
DETERMINISTIC_CRITERIA = CRITERIA[:4]


class PruningError(ValueError):
  """A pruning request that cannot be carried out (bad layer, levels, weights or checkpoint)."""


# ----------------------------------------------------------------------------- units


def _params(tree: Mapping) -> Mapping:
  return tree["params"] if "params" in tree else tree


def _layer_order(params: Mapping) -> list[str]:
  """Layer names in network order: conv1..convK then fc1..fcK (the models' naming convention)."""
  names = [k for k in params if k.startswith(("conv", "fc")) and not k.endswith("_bn")]
  return sorted(names, key=lambda k: (not k.startswith("conv"), int(k.lstrip("convfc"))))


def next_layer(params: Mapping, layer: str) -> str:
  """The layer that consumes `layer`'s units; an error for the output layer or an unknown name."""
  names = _layer_order(_params(params))
  if layer not in names:
    raise PruningError(f"unknown layer {layer!r}; prunable layers: {', '.join(names[:-1])}")
  index = names.index(layer)
  if index == len(names) - 1:
    raise PruningError(f"{layer!r} is the output layer, which is not prunable; prunable: {', '.join(names[:-1])}")
  return names[index + 1]


def unit_matrix(params: Mapping, layer: str) -> jax.Array:
  """The layer's units as rows: Dense kernel (n, m) -> (m, n); Conv (kh, kw, c, m) -> (m, kh*kw*c)."""
  params = _params(params)
  if layer not in params:
    raise PruningError(f"unknown layer {layer!r}; layers: {', '.join(_layer_order(params))}")
  kernel = params[layer]["kernel"]
  return kernel.reshape(-1, kernel.shape[-1]).T


def check_finite(W: jax.Array, layer: str) -> None:
  """Raises naming the layer when its weights hold NaN or infinity."""
  if not bool(jnp.all(jnp.isfinite(W))):
    raise PruningError(f"layer {layer!r} has non-finite weights (NaN or inf); was training diverging?")


def check_prunable(model: PlanNet, layer: str) -> None:
  """Raises for an unknown layer or the output layer, listing the prunable layers."""
  valid = ", ".join(prunable_layers(model))
  if layer not in [l.name for l in model.plan]:
    raise PruningError(f"unknown layer {layer!r}; prunable layers: {valid}")
  if layer not in prunable_layers(model):
    raise PruningError(f"layer {layer!r} is the output layer, which is not prunable; prunable layers: {valid}")


# ----------------------------------------------------------------------------- orders


def frame_potential_gram(W: jax.Array) -> jax.Array:
  """G_ij = <u_i, u_j>^2 for the normalised rows u_i (u_i = 0 for a zero row); exactly symmetric."""
  norms = jnp.linalg.norm(W, axis=1, keepdims=True)
  nonzero = norms[:, 0] > 0
  U = jnp.where(nonzero[:, None], W / jnp.where(nonzero[:, None], norms, 1.0), 0.0)
  G = jnp.square(U @ U.T)
  G = (G + G.T) / 2
  return G.at[jnp.diag_indices(len(G))].set(nonzero.astype(G.dtype))  # <u_i, u_i>^2 = 1 exactly


def _greedy_fp_order(W: jax.Array, remove_largest: bool) -> jax.Array:
  """Greedy frame-potential removal: O(m) update of the contributions c per removed unit."""
  G = frame_potential_gram(W)
  m = G.shape[0]
  sign = -1.0 if remove_largest else 1.0

  c0 = G.sum(1)
  # Contributions that tie exactly in real arithmetic reach here through different float32 roundings;
  # values within this tolerance count as tied, and ties go to the lower index (SPEC section 2).
  tol = 4 * m * jnp.finfo(G.dtype).eps * jnp.maximum(jnp.max(c0), 1.0)

  def body(i, carry):
    c, removed, order = carry
    score = jnp.where(removed, jnp.inf, sign * c)
    r = jnp.argmax(score <= jnp.min(score) + tol)  # first (lowest-index) unit among the tied best
    return c - G[r], removed.at[r].set(True), order.at[i].set(r)

  init = (c0, jnp.zeros(m, bool), jnp.zeros(m, jnp.int32))
  return jax.lax.fori_loop(0, m, body, init)[2]


def removal_order(W: jax.Array, criterion: str, *, key: jax.Array | None = None) -> jax.Array:
  """A permutation of the m units of `W` (m, n), the first removed first (SPEC section 2)."""
  if criterion not in CRITERIA:
    raise PruningError(f"unknown criterion {criterion!r}; valid criteria: {', '.join(CRITERIA)}")
  m = W.shape[0]
  if criterion == "random":
    if key is None:
      raise PruningError("criterion 'random' needs a key")
    return jax.random.permutation(key, m).astype(jnp.int32)
  if criterion in ("max_mag", "min_mag"):
    norms = jnp.linalg.norm(W, axis=1)
    scores = norms if criterion == "max_mag" else -norms
    return jnp.argsort(scores, stable=True).astype(jnp.int32)
  return _greedy_fp_order(W, remove_largest=criterion == "min_fp")


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


def level_masks(order: jax.Array, levels) -> jax.Array:
  """bool[len(levels), m]: row p keeps every unit except the first levels[p] of `order`."""
  m = order.shape[0]
  rank = jnp.zeros(m, jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
  return rank[None, :] >= jnp.asarray(levels)[:, None]


# ----------------------------------------------------------------------------- removal


def _input_mask(keep: jax.Array, rows: int) -> jax.Array:
  """The next layer's input rows that belong to kept units. A conv's channels repeat once per spatial
  position when flattened (channel last), so the unit mask is tiled; after a global average pool there
  is one row per channel."""
  m = keep.shape[0]
  if rows % m:
    raise PruningError(f"next layer has {rows} inputs, not a multiple of the {m} pruned units")
  return jnp.tile(keep, rows // m)


def remove_units(params: Mapping, layer: str, keep: jax.Array) -> Mapping:
  """Exactly removes the units of `layer` where `keep` is False, by zeroing their outgoing weights.

  Accepts a params dict or a variables dict ({"params", "batch_stats"}; batch stats pass through).
  Pure and vmappable over `keep`.
  """
  if "params" in params:
    return {**params, "params": remove_units(params["params"], layer, keep)}
  nxt = next_layer(params, layer)
  kernel = params[nxt]["kernel"]
  keep = keep.astype(kernel.dtype)
  if kernel.ndim == 4:  # conv: (kh, kw, c_in, c_out)
    kernel = kernel * keep[None, None, :, None]
  else:
    kernel = kernel * _input_mask(keep, kernel.shape[0])[:, None]
  return {**params, nxt: {**params[nxt], "kernel": kernel}}


def shrink(params: Mapping, layer: str, keep) -> Mapping:
  """The physically smaller network: `layer`'s kept units only (kernel, bias, BatchNorm scale, shift
  and statistics) and the matching slice of the next layer. `keep` must be concrete. Use `resize` for
  the model that matches the result."""
  keep = np.asarray(keep, bool)
  if "params" in params:
    out = {**params, "params": shrink(params["params"], layer, keep)}
    if "batch_stats" in params and f"{layer}_bn" in params["batch_stats"]:
      stats = params["batch_stats"][f"{layer}_bn"]
      out["batch_stats"] = {**params["batch_stats"], f"{layer}_bn": {k: v[keep] for k, v in stats.items()}}
    return out
  nxt = next_layer(params, layer)
  out = dict(params)
  out[layer] = {k: (v[..., keep] if k == "kernel" else v[keep]) for k, v in params[layer].items()}
  if f"{layer}_bn" in params:
    out[f"{layer}_bn"] = {k: v[keep] for k, v in params[f"{layer}_bn"].items()}
  kernel = np.asarray(params[nxt]["kernel"])
  if kernel.ndim == 4:
    kernel = kernel[:, :, keep, :]
  else:
    kernel = kernel[np.asarray(_input_mask(jnp.asarray(keep), kernel.shape[0]))]
  out[nxt] = {**params[nxt], "kernel": kernel}
  return out


def resize(model: PlanNet, params: Mapping) -> PlanNet:
  """`model` with every layer's width read from `params` (e.g. after `shrink`)."""
  params = _params(params)
  plan = tuple(dataclasses.replace(l, features=int(params[l.name]["kernel"].shape[-1])) for l in model.plan)
  return model.clone(plan=plan)


# ----------------------------------------------------------------------------- the sweep


def _loss_and_correct(logits, y):
  """Summed loss and correct count over the last batch axis; rows labelled -1 are padding."""
  y = jnp.broadcast_to(y, logits.shape[:-1])
  real = y >= 0
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
  return jnp.sum(jnp.where(real, loss, 0.0), -1), jnp.sum(real & (jnp.argmax(logits, -1) == y), -1)


def _next_layer_inputs(model, variables, layer, nxt, h):
  """`layer`'s activation as the next (dense) layer reads it: (N, P, m) for P spatial positions
  (channel last, as flattened; P = 1 for a dense layer or after global average pooling), and the
  next kernel as (P, m, out)."""
  h = input_of(model, layer, nxt, h)
  m = h.shape[-1]
  kernel = variables["params"][nxt]["kernel"]
  return h.reshape(h.shape[0], -1, m), kernel.reshape(-1, m, kernel.shape[-1])


def _sweep_nested(model, variables, layer, nxt, h, y, orders_CxM, levels):
  """Dense next layer: walking the removal order backwards from level m (nothing kept) to level 0,
  each level's pre-activation of the next layer is the previous one plus one unit's contribution.
  One running sum per order; the network after the next layer runs once per level."""
  inputs_NxPxM, kernel_PxMxO = _next_layer_inputs(model, variables, layer, nxt, h)
  n, positions, m = inputs_NxPxM.shape
  if positions == 1:  # a unit's contribution is an outer product, computed when needed
    contribution = lambda u: inputs_NxPxM[:, 0, u, None] * kernel_PxMxO[0, u][None, :]
  else:  # flattened conv channels: contract over positions once for all units, (m, N, out)
    per_unit = jnp.einsum("npm,pmo->mno", inputs_NxPxM, kernel_PxMxO)
    contribution = lambda u: per_unit[u]
  bias = variables["params"][nxt]["bias"]
  output = layer_of(model, nxt).output

  def evaluate(z_NxO):
    logits = z_NxO if output else model.apply(variables, jax.nn.relu(z_NxO), start=nxt)
    return _loss_and_correct(logits, y)

  def one_order(order):
    z_top = jnp.broadcast_to(bias, (n, bias.shape[0]))

    def add_unit(z, p):  # level p keeps order[p:], so it adds order[p] to level p + 1
      z = z + contribution(order[p])
      return z, evaluate(z)

    _, (loss, correct) = jax.lax.scan(add_unit, z_top, jnp.arange(m - 1, -1, -1))
    top_loss, top_correct = evaluate(z_top)
    loss = jnp.concatenate([loss[::-1], top_loss[None]])[levels]  # back to level order 0..m
    correct = jnp.concatenate([correct[::-1], top_correct[None]])[levels]
    return loss, correct

  return jax.lax.map(one_order, orders_CxM)


def _flat_masks(orders_CxM, levels, mask_chunk):
  """Every (order, level) mask, padded with keep-all masks to whole chunks: (chunks, mask_chunk, m)."""
  masks = jax.vmap(lambda o: level_masks(o, levels))(orders_CxM)  # (C, L, m)
  c, l, m = masks.shape
  flat = masks.reshape(c * l, m)
  pad = (-len(flat)) % mask_chunk
  return jnp.concatenate([flat, jnp.ones((pad, m), bool)]).reshape(-1, mask_chunk, m)


def _rest_for_masks(model, variables, layer, h, y, masks_BxM):
  """(loss sums, correct counts) of the network after `layer` for a batch of masks."""
  rest = lambda mask: model.apply(variables, h, start=layer, masks={layer: mask})
  return _loss_and_correct(jax.vmap(rest)(masks_BxM), y)


def _sweep_general(model, variables, layer, h, y, orders_CxM, levels, mask_chunk):
  """Any layer: the rest of the network for every mask, vmapped over chunks of masks."""
  c, l = orders_CxM.shape[0], levels.shape[0]
  chunks = _flat_masks(orders_CxM, levels, mask_chunk)
  loss, correct = jax.lax.map(lambda ch: _rest_for_masks(model, variables, layer, h, y, ch), chunks)
  return loss.reshape(-1)[: c * l].reshape(c, l), correct.reshape(-1)[: c * l].reshape(c, l)


def _head(model, variables, layer, x, normalization):
  """The network up to `layer` (its activation), run once per data chunk."""
  if normalization is not None:
    x = normalize(x, *normalization)
  return model.apply(variables, x, stop=layer)


def _chunk_totals(model, variables, layer, nxt, x, y, orders_CxM, levels, normalization, nested, mask_chunk):
  h = _head(model, variables, layer, x, normalization)
  if nested:
    return _sweep_nested(model, variables, layer, nxt, h, y, orders_CxM, levels)
  return _sweep_general(model, variables, layer, h, y, orders_CxM, levels, mask_chunk)


def _forward_all(model, variables, layer, nxt, xs, ys, orders_CxM, levels, normalization, nested, mask_chunk):
  """The whole sweep as one program: a scan over data chunks."""

  def per_chunk(totals, chunk):
    loss, correct = _chunk_totals(
      model, variables, layer, nxt, *chunk, orders_CxM, levels, normalization, nested, mask_chunk
    )
    return (totals[0] + loss, totals[1] + correct), None

  c, l = orders_CxM.shape[0], levels.shape[0]
  init = (jnp.zeros((c, l), jnp.float32), jnp.zeros((c, l), jnp.int32))
  return jax.lax.scan(per_chunk, init, (xs, ys))[0]


_STATIC = ("model", "layer", "nxt", "normalization", "nested", "mask_chunk")
_sweep_jit = jax.jit(_forward_all, static_argnames=_STATIC)
_head_jit = jax.jit(_head, static_argnames=("model", "layer", "normalization"))
_nested_jit = jax.jit(_sweep_nested, static_argnames=("model", "layer", "nxt"))
_rest_jit = jax.jit(_rest_for_masks, static_argnames=("model", "layer"))
_flat_masks_jit = jax.jit(_flat_masks, static_argnames=("mask_chunk",))


def _forward_all_stepped(model, variables, layer, nxt, xs, ys, orders_CxM, levels, normalization, nested, mask_chunk):
  """The same sweep as a host loop of compiled pieces: XLA:CPU runs convolutions inside loop bodies
  about 13x slower than outside them (jax-ml/jax#12868), so conv models on CPU use this form."""
  c, l = orders_CxM.shape[0], levels.shape[0]
  loss, correct = jnp.zeros((c, l), jnp.float32), jnp.zeros((c, l), jnp.int32)
  chunks = None if nested else _flat_masks_jit(orders_CxM, levels, mask_chunk=mask_chunk)
  for x, y in zip(xs, ys):
    h = _head_jit(model=model, variables=variables, layer=layer, x=x, normalization=normalization)
    if nested:
      part = _nested_jit(
        model=model, variables=variables, layer=layer, nxt=nxt, h=h, y=y, orders_CxM=orders_CxM, levels=levels
      )
    else:
      rest = lambda ch: _rest_jit(model=model, variables=variables, layer=layer, h=h, y=y, masks_BxM=ch)
      parts = [rest(ch) for ch in chunks]
      part = tuple(jnp.concatenate([p[i] for p in parts])[: c * l].reshape(c, l) for i in (0, 1))
    loss, correct = loss + part[0], correct + part[1]
  return loss, correct


def _stepped(model: PlanNet) -> bool:
  return jax.default_backend() == "cpu" and any(l.kind == "conv" for l in model.plan)


def sweep(
  model: PlanNet,
  variables: Mapping,
  layer: str,
  x,
  y,
  orders: Mapping[str, jax.Array],
  levels=None,
  *,
  normalization: tuple | None = None,
  data_chunk: int | None = None,
  mask_chunk: int = 16,
  nested: bool | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """Accuracy and mean loss on (x, y) for every order in `orders` and every level (default 0..m).

  One batched computation: per data chunk the network up to `layer` runs once; when the next layer is
  dense (`nested`, default automatic) the nested masks turn its pre-activation into cumulative sums,
  otherwise the rest of the network runs vmapped over chunks of masks. `normalization=(mean, std)`
  standardises uint8 images as in training. Memory is bounded by `data_chunk` images (default 2,048 for
  the running sums, 250 when masks are batched) times `mask_chunk` masks.
  """
  check_prunable(model, layer)
  nxt = next_layer(variables, layer)
  m = layer_of(model, layer).features
  levels = check_levels(np.arange(m + 1) if levels is None else levels, m)
  names = list(orders)
  orders_CxM = jnp.stack([jnp.asarray(orders[k], jnp.int32) for k in names])
  if nested is None:
    nested = layer_of(model, nxt).kind == "dense"
  n = len(y)
  chunk = min(data_chunk or (2048 if nested else 250), n)
  chunks = math.ceil(n / chunk)
  pad = chunks * chunk - n
  xs = jnp.concatenate([jnp.asarray(x), jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(chunks, chunk, *x.shape[1:])
  ys = jnp.concatenate([jnp.asarray(y, jnp.int32), jnp.full((pad,), -1, jnp.int32)]).reshape(chunks, chunk)
  if normalization is not None:
    normalization = tuple(tuple(float(v) for v in part) for part in normalization)
  run = _forward_all_stepped if _stepped(model) else _sweep_jit
  loss, correct = run(
    model=model, variables=variables, layer=layer, nxt=nxt, xs=xs, ys=ys, orders_CxM=orders_CxM,
    levels=jnp.asarray(levels), normalization=normalization, nested=nested, mask_chunk=mask_chunk,
  )
  loss, acc = np.asarray(loss) / n, np.asarray(correct) / n
  return {name: {"accuracy": acc[i], "loss": loss[i], "levels": levels} for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- comparing criteria


def compare_criteria(
  model: PlanNet,
  variables: Mapping,
  layer: str,
  x,
  y,
  *,
  criteria=CRITERIA,
  levels=None,
  random_seeds: int = 5,
  seed: int = 0,
  normalization: tuple | None = None,
  **sweep_options,
) -> dict:
  """Every criterion's removal order and accuracy curve for one layer (the report's Figure 2 data).

  Random pruning is summarised as mean and standard deviation over `random_seeds` permutations.
  Returns {"units", "levels", "base_accuracy", "criteria": {name: {accuracy, loss}}, "random": {...},
  "orders": {name: int32[m]}}.
  """
  check_prunable(model, layer)
  unknown = [c for c in criteria if c not in CRITERIA]
  if unknown:
    raise PruningError(f"unknown criteria {unknown}; valid criteria: {', '.join(CRITERIA)}")
  W = unit_matrix(variables, layer)
  check_finite(W, layer)
  m = W.shape[0]
  levels = check_levels(np.arange(m + 1) if levels is None else levels, m)
  orders = {c: removal_order(W, c) for c in criteria if c != "random"}
  if "random" in criteria:
    if random_seeds < 1:
      raise PruningError("random pruning needs at least one seed")
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), m), random_seeds)
    orders.update({f"random/{i}": removal_order(W, "random", key=k) for i, k in enumerate(keys)})
  curves = sweep(model, variables, layer, x, y, orders, levels, normalization=normalization, **sweep_options)
  result = {
    "units": m,
    "levels": levels.tolist(),
    "criteria": {c: {k: curves[c][k].tolist() for k in ("accuracy", "loss")} for c in criteria if c != "random"},
    "orders": {name: np.asarray(order).tolist() for name, order in orders.items()},
  }
  if "random" in criteria:
    acc = np.stack([curves[f"random/{i}"]["accuracy"] for i in range(random_seeds)])
    loss = np.stack([curves[f"random/{i}"]["loss"] for i in range(random_seeds)])
    result["random"] = {
      "seeds": random_seeds,
      "accuracy_mean": acc.mean(0).tolist(),
      "accuracy_std": acc.std(0).tolist(),
      "loss_mean": loss.mean(0).tolist(),
      "loss_std": loss.std(0).tolist(),
    }
  any_curve = next(iter(curves.values()))
  result["base_accuracy"] = float(any_curve["accuracy"][0]) if levels[0] == 0 else None
  return result


def summary_rows(layer_result: dict, fractions=(0.25, 0.5, 0.75, 0.9)) -> list[tuple[str, list[float]]]:
  """(criterion, accuracy at each fraction of units removed), at the nearest swept level."""
  levels = np.asarray(layer_result["levels"])
  picks = [int(np.argmin(np.abs(levels - f * layer_result["units"]))) for f in fractions]
  rows = [(c, [curve["accuracy"][i] for i in picks]) for c, curve in layer_result["criteria"].items()]
  if "random" in layer_result:
    r = layer_result["random"]
    rows.append(("random (mean)", [r["accuracy_mean"][i] for i in picks]))
  return rows

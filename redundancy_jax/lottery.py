"""Lottery tickets (Frankle and Carbin 2019; SPEC section 5): iterative magnitude pruning, unstructured and
layer-wise, with boolean masks shaped like the kernels. Pure functions on parameter pytrees; the masks are
applied inside the compiled train step (`train.apply_masks`, `train.train(..., start=(params, masks))`).

  rates = layer_rates(model_name, model)              # {layer: fraction of survivors removed per round}
  masks = full_masks(params)                          # every kernel weight alive
  masks = prune_round(trained_params, masks, rates)   # drop the smallest surviving |w| per layer
  control = random_masks(key, masks)                  # same per-layer counts, random positions
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

# SPEC section 5: dense layers 20% per round, the output layer 10%, conv layers by model.
DENSE_RATE, OUTPUT_RATE = 0.2, 0.1
CONV_RATES = {"conv2": 0.1, "conv4": 0.1, "conv6": 0.15}


def layer_rates(name: str, model) -> dict[str, float]:
  """Per-layer pruning rate of model `name` (its plan gives the kinds); conv rates beyond SPEC's three
  models (VGG19) take 10%."""
  rates = {}
  for layer in model.plan:
    if layer.output:
      rates[layer.name] = OUTPUT_RATE
    elif layer.kind == "dense":
      rates[layer.name] = DENSE_RATE
    else:
      rates[layer.name] = CONV_RATES.get(name, 0.1)
  return rates


def full_masks(params: Mapping) -> dict[str, np.ndarray]:
  """All-True masks for every layer's kernel (biases are never pruned)."""
  return {name: np.ones(np.shape(p["kernel"]), bool) for name, p in params.items() if "kernel" in p}


def prune_round(params: Mapping, masks: Mapping, rates: Mapping[str, float]) -> dict[str, np.ndarray]:
  """One round of magnitude pruning per layer: of each layer's surviving kernel weights, the
  round(rate x survivors) smallest |w| are removed (ties: the lower flat index goes first)."""
  out = {}
  for name, mask in masks.items():
    w = np.abs(np.asarray(params[name]["kernel"], np.float64)).ravel()
    alive = np.flatnonzero(np.asarray(mask).ravel())
    drop = int(round(rates[name] * len(alive)))
    order = alive[np.lexsort((alive, w[alive]))]  # by magnitude, then index
    new = np.asarray(mask).ravel().copy()
    new[order[:drop]] = False
    out[name] = new.reshape(np.shape(mask))
  return out


def random_masks(key: jax.Array, masks: Mapping) -> dict[str, np.ndarray]:
  """Masks with each layer's number of survivors of `masks`, at uniformly random positions."""
  out = {}
  for i, (name, mask) in enumerate(sorted(masks.items())):
    m = np.asarray(mask)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), m.size))
    new = np.zeros(m.size, bool)
    new[perm[: int(m.sum())]] = True
    out[name] = new.reshape(m.shape)
  return out


def remaining(masks: Mapping) -> float:
  """Fraction of kernel weights alive."""
  return float(sum(np.sum(m) for m in masks.values()) / sum(np.size(m) for m in masks.values()))

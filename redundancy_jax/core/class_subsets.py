"""Class subsets (DEFINITIONS.md section 6): replica r trains on C_r of the classes, relabelled 0..C_r-1
(`data.class_subsets`), its classifier's other outputs masked. What the training step and the evaluation
of `core/steps.py` need of them: the masked logits, each replica's labels and example counts, and the
absent classes' weights kept at their initial values. `setup` is a `steps.Setup` (its `label_maps`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.models import topology

MASKED_LOGIT = -1e9  # an output outside a replica's class subset: exp(MASKED_LOGIT - max) is exactly 0


def mask_logits(logits: jax.Array, num_classes) -> jax.Array:
  """`logits` with every output >= `num_classes` set to MASKED_LOGIT: softmax, loss, gradients and argmax
  are then exactly those of a classifier with `num_classes` outputs (and the masked outputs get none)."""
  return jnp.where(jnp.arange(logits.shape[-1]) < num_classes, logits, MASKED_LOGIT)


def class_counts(setup) -> jax.Array:
  """(K,) the number of classes each replica trains on (class subsets only)."""
  return jnp.asarray(np.max(setup.label_maps, axis=1) + 1, jnp.int32)


def shared_labels(setup, y: jax.Array) -> jax.Array:
  """Labels `y` (any shape, -1 = padding) as each replica sees them: (K, *y.shape), -1 where padded or
  outside the replica's class subset; `y` itself without class subsets."""
  if setup.label_maps is None:
    return y
  maps = jnp.asarray(setup.label_maps, jnp.int32)
  return jnp.where(y >= 0, maps[:, jnp.maximum(y, 0)], -1)


def num_examples(setup, y: jax.Array) -> jax.Array:
  """The real examples among labels `y` (a padded split): a scalar, or (K,) with class subsets."""
  return jnp.sum(shared_labels(setup, y) >= 0, axis=tuple(range(-y.ndim, 0)))


def keep_absent_classes(classifier: str, updates, num_classes):
  """`updates` with the classifier's outputs from `num_classes` on set to zero, so that the absent classes'
  weights keep their initial values under any optimizer, weight decay included (DEFINITIONS.md section 6).
  Their gradients are exactly zero (`mask_logits`), so without weight decay nothing changes."""
  path = classifier.split("/")
  group = topology.get(updates, path)
  keep = jnp.arange(group["kernel"].shape[-1]) < num_classes
  return topology.replace(updates, path, {k: v * keep.astype(v.dtype) if k in ("kernel", "bias") else v
                                          for k, v in group.items()})

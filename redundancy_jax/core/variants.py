"""One engine for "evaluate many variants of one layer": the pruning sweep (masks, running sums over a
removal order), the low-rank sweep (W_k, W0 + P_k(W - W0)) and removable units all run through it.

  totals = evaluate(model, variables, x, y, Pass(layer="fc1", cut="fc1", prepare=..., score=...),
                    variants_V, aux)

Per data chunk the network up to `cut` runs once (the head; `cut=None` is the input), `prepare` turns
that activation into what every variant shares (e.g. the next layer's per-unit contributions), and
`score` evaluates one variant on it, vmapped over batches of `variant_batch` variants. Totals over the
data are summed on device. Conventions, in this one place:

- data are padded to whole chunks and padding rows carry the label -1 (`pad_chunks`); `score` sums
  over real rows only (`loss_and_correct` does it);
- variants are padded to whole batches by repeating the last one; their results are dropped;
- backend policy (`host_loop`): XLA:CPU runs convolutions inside loop bodies (scan/while) about 13x
  slower than outside them (jax-ml/jax#12868, measured in BUILD_NOTES.md), so on CPU, for models with
  convolutions, the chunks and variant batches are stepped from Python through compiled pieces;
  everywhere else the whole evaluation is one compiled program (a scan over data chunks, a map over
  variant batches);
- a data chunk is sharded over the mesh's "data" axis (`parallel.shard_batch`).

`prepare(model, layer, variables, aux, h)` and `score(model, layer, variables, aux, inputs, y, variant)`
must be module-level functions (they are static arguments of the compiled programs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from redundancy_jax.core import parallel
from redundancy_jax.models import PlanNet


@dataclasses.dataclass(frozen=True)
class Pass:
  """What one evaluation computes: the analysed `layer`, where the head stops (`cut`), and the two
  module-level functions `prepare` and `score` (see the module docstring)."""

  layer: str
  cut: str | None
  prepare: Callable[..., Any]
  score: Callable[..., Any]
  variant_batch: int = 16
  data_chunk: int = 500


def keep_inputs(model, layer, variables, aux, h):
  """A `prepare` that hands the head's activation to every variant unchanged."""
  del model, layer, variables, aux
  return h


def loss_and_correct(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed cross-entropy and correct count over the last batch axis; rows labelled -1 are padding."""
  y = jnp.broadcast_to(y, logits.shape[:-1])
  real = y >= 0
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
  return jnp.sum(jnp.where(real, loss, 0.0), -1), jnp.sum(real & (jnp.argmax(logits, -1) == y), -1)


def host_loop(model: PlanNet) -> bool:
  """Whether to step from Python (CPU and a model with convolutions), see the module docstring."""
  return jax.default_backend() == "cpu" and any(l.kind == "conv" for l in model.plan)


def pad_chunks(x, y, chunk: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) padded to whole chunks of at most `chunk` rows (a multiple of `multiple`), shaped
  (chunks, chunk, ...); padding rows are zeros labelled -1."""
  n = len(y)
  chunk = max(multiple, min(chunk, n))
  chunk = math.ceil(chunk / multiple) * multiple
  chunks = math.ceil(n / chunk)
  pad = chunks * chunk - n
  x = np.asarray(x)
  x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  y = np.concatenate([np.asarray(y, np.int32), np.full(pad, -1, np.int32)])
  return x.reshape(chunks, chunk, *x.shape[1:]), y.reshape(chunks, chunk)


def _batched(variants, batch: int):
  """Leading axis V of every leaf padded (repeating the last variant) to (V // batch, batch, ...)."""
  v = jax.tree.leaves(variants)[0].shape[0]
  batch = max(1, min(batch, v))
  pad = (-v) % batch
  grow = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]).reshape(-1, batch, *a.shape[1:])
  return jax.tree.map(grow, variants), v


def _head(model, spec, mesh, variables, aux, x):
  x = parallel.shard_batch(x, mesh)
  h = x if spec.cut is None else model.apply(variables, x, stop=spec.cut)
  return spec.prepare(model, spec.layer, variables, aux, h)


def _score_batch(model, spec, variables, aux, inputs, y, variants_B):
  one = lambda v: spec.score(model, spec.layer, variables, aux, inputs, y, v)
  return jax.vmap(one)(variants_B)


def _chunk(model, spec, mesh, variables, aux, variants_VxB, x, y):
  inputs = _head(model, spec, mesh, variables, aux, x)
  return jax.lax.map(lambda vb: _score_batch(model, spec, variables, aux, inputs, y, vb), variants_VxB)


def _all_chunks(model, spec, mesh, variables, aux, variants_VxB, xs, ys):
  def body(totals, chunk):
    part = _chunk(model, spec, mesh, variables, aux, variants_VxB, *chunk)
    return jax.tree.map(jnp.add, totals, part), None

  shapes = jax.eval_shape(functools.partial(_chunk, model, spec, mesh), variables, aux, variants_VxB, xs[0], ys[0])
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.lax.scan(body, zeros, (xs, ys))[0]


_STATIC = ("model", "spec", "mesh")
_all_chunks_jit = jax.jit(_all_chunks, static_argnames=_STATIC)
_head_jit = jax.jit(_head, static_argnames=_STATIC)
_score_batch_jit = jax.jit(_score_batch, static_argnames=("model", "spec"))


def _arguments(model, variables, x, y, spec: Pass, variants, aux, mesh):
  """The arguments of the compiled pieces: data padded to chunks, variants to batches, every array placed
  on every device of the mesh (of every process), each data chunk then split over its "data" axis."""
  mesh = mesh or parallel.data_mesh()
  xs, ys = pad_chunks(x, y, spec.data_chunk, multiple=mesh.shape["data"])
  variants_VxB, v = _batched(jax.tree.map(np.asarray, variants), spec.variant_batch)
  put = lambda tree: parallel.replicate(jax.tree.map(np.asarray, tree), mesh)
  return mesh, put(xs), put(ys), put(dict(variables)), put(variants_VxB), put(aux), v


def lower(model: PlanNet, variables: Mapping, x, y, spec: Pass, variants, aux: Any = None, *, mesh=None):
  """The whole evaluation as the one compiled program of the accelerator form, lowered, not run: for
  XLA's analyses (`lower(...).compile().memory_analysis()`, `.cost_analysis()`)."""
  mesh, xs, ys, variables, variants_VxB, aux, _ = _arguments(model, variables, x, y, spec, variants, aux, mesh)
  return _all_chunks_jit.lower(model, spec, mesh, variables, aux, variants_VxB, xs, ys)


def evaluate(
  model: PlanNet,
  variables: Mapping,
  x,
  y,
  spec: Pass,
  variants,
  aux: Any = None,
  *,
  mesh: jax.sharding.Mesh | None = None,
) -> Any:
  """`score`'s outputs summed over the data, for every variant: a pytree with leading axis V.

  `variants` is a pytree of arrays with leading axis V; `aux` a pytree of arrays every call shares.
  """
  mesh, xs, ys, variables, variants_VxB, aux, v = _arguments(model, variables, x, y, spec, variants, aux, mesh)
  unbatch = lambda a: np.asarray(a).reshape(-1, *a.shape[2:])[:v]
  if not host_loop(model):
    totals = _all_chunks_jit(model, spec, mesh, variables, aux, variants_VxB, xs, ys)
    return jax.tree.map(unbatch, parallel.fetch(totals))
  totals = None
  batches = [jax.tree.map(lambda a, i=i: a[i], variants_VxB) for i in range(jax.tree.leaves(variants_VxB)[0].shape[0])]
  for c in range(xs.shape[0]):
    xc, yc = xs[c], ys[c]
    inputs = parallel.one_at_a_time(_head_jit(model, spec, mesh, variables, aux, xc), mesh)
    parts = [parallel.one_at_a_time(_score_batch_jit(model, spec, variables, aux, inputs, yc, vb), mesh)
             for vb in batches]
    part = jax.tree.map(lambda *p: jnp.stack(p), *parts)
    totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
  return jax.tree.map(unbatch, parallel.fetch(totals))


def _unchanged_score(model, layer, variables, aux, inputs, y, variant):
  del layer, aux, variant
  return loss_and_correct(model.apply(variables, inputs), y)


def loss_and_accuracy(model: PlanNet, variables: Mapping, x, y, *, data_chunk: int = 500) -> tuple[float, float]:
  """(mean loss, accuracy) of the unchanged network on (x, y)."""
  spec = Pass(layer="", cut=None, prepare=keep_inputs, score=_unchanged_score, variant_batch=1, data_chunk=data_chunk)
  loss, correct = evaluate(model, variables, x, y, spec, jnp.zeros(1))
  return float(loss[0]) / len(y), float(correct[0]) / len(y)


@functools.partial(jax.jit, static_argnames="model")
def _labels(model, variables, x):
  return jnp.argmax(model.apply(variables, x), -1)


def predict(model: PlanNet, variables: Mapping, x, *, chunk: int = 500) -> np.ndarray:
  """Predicted labels of the unchanged network on `x`, one compiled call per chunk."""
  xs, _ = pad_chunks(x, np.zeros(len(x)), chunk)
  variables = jax.tree.map(jnp.asarray, dict(variables))
  labels = [np.asarray(_labels(model, variables, jnp.asarray(xc))) for xc in xs]
  return np.concatenate(labels)[: len(x)].astype(np.int32)

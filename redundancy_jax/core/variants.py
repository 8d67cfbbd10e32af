"""One engine for "evaluate many variants of one layer": the pruning sweep (masks, running sums over a
removal order), the low-rank sweep (W_k, W0 + P_k(W - W0)) and removable units all run through it, on any
network (`models.Network`).

  totals = evaluate(net, variables, x, y, Pass(Cut("mask", "fc1"), prepare=..., score=...), variants_V, aux)

A `Cut` says where the variants enter the network: "mask" multiplies a layer's output (after the
BatchNorm that follows it) by a per-unit value, "output" replaces a layer's output, "kernel" its kernel;
`capture` names layers whose inputs the variants also need. The network is traced once with the
variant's value as an extra input and split (`core/jaxprs.py`) into the part that does not depend on it
(the head: everything before the cut, and the skip paths around it) and the part that does (the tail).
Per data chunk the head runs once, `prepare` turns what it captured into what every variant shares (e.g.
the next layer's per-unit contributions), and `score` evaluates one variant (calling `tail(value)` for
its logits), vmapped over batches of `variant_batch` variants. Totals over the data are summed on device.
Conventions, in this one place:

- data are padded to whole chunks and padding rows carry the label -1 (`pad_chunks`); `score` sums
  over real rows only (`loss_and_correct` does it);
- variants are padded to whole batches by repeating the last one; their results are dropped;
- backend policy (`host_loop`): XLA:CPU runs convolutions inside loop bodies (scan/while) about 13x
  slower than outside them (jax-ml/jax#12868, measured in BUILD_NOTES.md), so on CPU, for networks with
  convolutions, the chunks and variant batches are stepped from Python through compiled pieces;
  everywhere else the whole evaluation is one compiled program (a scan over data chunks, a map over
  variant batches);
- a data chunk is sharded over the mesh's "data" axis (`parallel.shard_batch`).

`prepare(net, cut, variables, aux, captured)` and `score(net, cut, variables, aux, inputs, y, variant,
tail)` must be module-level functions (they are static arguments of the compiled programs).
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
from jax.ad_checkpoint import checkpoint_name

from redundancy_jax.core import jaxprs, parallel
from redundancy_jax.models import Network, topology

CUTS = ("mask", "output", "kernel", "none")


@dataclasses.dataclass(frozen=True)
class Cut:
  """Where a variant enters the network (module docstring): `kind` one of `CUTS` at `layer`; `capture`
  layers whose inputs the head also returns ("none": the unchanged network)."""

  kind: str
  layer: str = ""
  capture: tuple[str, ...] = ()
  at: str = ""  # "mask": the call whose output is masked (the layer's BatchNorm, default the layer)
  source: str = ""  # "output": the layer whose units make up the replaced output (running sums)
  static: tuple = ()  # hashable parameters of `prepare` and `score` (e.g. a consumer's convolution)


@dataclasses.dataclass(frozen=True)
class Pass:
  """What one evaluation computes: the `cut`, and the two module-level functions `prepare` and `score`
  (see the module docstring)."""

  cut: Cut
  prepare: Callable[..., Any]
  score: Callable[..., Any]
  variant_batch: int = 16
  data_chunk: int = 500


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """A network traced at a cut and split: `head(variable leaves..., x) -> boundary`, `tail(boundary...,
  value) -> [logits, captured...]`, and where the captured inputs lie in the boundary."""

  head: jaxprs.Graph
  tail: jaxprs.Graph
  captured: tuple[int, ...]
  value: jax.ShapeDtypeStruct  # what a variant's value must be


def _traced(net: Network, cut: Cut, variables, x, value):
  """The network's logits (and captured layer inputs) with `value` entering at `cut`."""
  captured = {}

  def hook(name, kind, x_in, call):
    if name in cut.capture:
      captured[name] = checkpoint_name(x_in, f"capture:{name}")
    if cut.kind == "output" and name == cut.layer:
      return value
    y = call(x_in)
    if cut.kind == "mask" and name == (cut.at or cut.layer):
      return y * value.astype(y.dtype)
    return y

  if cut.kind == "kernel":
    variables = {**variables, "params": topology.replace(variables["params"], topology.kernel_path(cut.layer), value)}
  logits = net.apply(variables, x, hook=hook)
  return [logits, *(captured[name] for name in cut.capture)]


@functools.lru_cache(maxsize=64)
def split(net: Network, cut: Cut, variables_shape, x_shape) -> Split:
  """The `Split` of `net` at `cut` for variables and a data chunk of the given shapes (cached)."""
  variables = jax.tree.unflatten(variables_shape[0], [jax.ShapeDtypeStruct(s, d) for s, d in variables_shape[1]])
  x = jax.ShapeDtypeStruct(*x_shape)
  if cut.kind == "kernel":
    value = topology.get(variables["params"], topology.kernel_path(cut.layer))
  elif cut.kind == "output":
    value = jax.eval_shape(lambda v, x: _layer_output(net, v, x, cut.layer), variables, x)
  elif cut.kind == "mask":
    value = jax.ShapeDtypeStruct((_units(net, variables, cut.layer),), jnp.float32)
  else:  # "none": a placeholder nothing reads
    value = jax.ShapeDtypeStruct((), jnp.float32)
  graph = jaxprs.trace(functools.partial(_traced, net, cut), variables, x, value)
  head, tail = graph.split([len(graph.invars) - 1])
  captured = tuple(head.outvars.index(v) for v in graph.outvars[1:])
  return Split(head, tail, captured, jax.ShapeDtypeStruct(tuple(value.shape), value.dtype))


def _layer_output(net, variables, x, layer):
  out = []

  def hook(name, kind, x_in, call):
    y = call(x_in)
    if name == layer:
      out.append(y)
    return y

  net.apply(variables, x, hook=hook)
  return out[0]


def _units(net, variables, layer) -> int:
  return int(topology.kernel(variables, layer).shape[-1])


def _shapes(variables, x) -> tuple:
  leaves, treedef = jax.tree.flatten(dict(variables))
  return (treedef, tuple((tuple(np.shape(a)), np.dtype(a.dtype)) for a in leaves)), (tuple(x.shape), np.dtype(x.dtype))


def keep_inputs(net, cut, variables, aux, captured):
  """A `prepare` that hands nothing but the captured inputs to every variant."""
  del net, cut, variables, aux
  return captured


def loss_and_correct(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed cross-entropy and correct count over the last batch axis; rows labelled -1 are padding."""
  y = jnp.broadcast_to(y, logits.shape[:-1])
  real = y >= 0
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
  return jnp.sum(jnp.where(real, loss, 0.0), -1), jnp.sum(real & (jnp.argmax(logits, -1) == y), -1)


def has_convolutions(variables: Mapping) -> bool:
  """Whether a network's parameters hold a convolution kernel (a 4-D "kernel" leaf)."""
  paths = jax.tree_util.tree_flatten_with_path(dict(variables).get("params", variables))[0]
  return any(str(getattr(p[-1], "key", "")) == "kernel" and len(np.shape(leaf)) == 4 for p, leaf in paths)


def host_loop(variables: Mapping) -> bool:
  """Whether to step from Python (CPU and a network with convolutions), see the module docstring."""
  return jax.default_backend() == "cpu" and has_convolutions(variables)


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


def _head(net, spec, mesh, variables, aux, x):
  x = parallel.shard_batch(x, mesh)
  cut = split(net, spec.cut, *_shapes(variables, x))
  boundary = cut.head.evaluate(*jax.tree.leaves(dict(variables)), x)
  inputs = spec.prepare(net, spec.cut, variables, aux, [boundary[i] for i in cut.captured])
  return boundary, inputs


def _score_batch(net, spec, x_shape, variables, aux, boundary, inputs, y, variants_B):
  cut = split(net, spec.cut, _shapes(variables, jax.ShapeDtypeStruct(*x_shape))[0], x_shape)
  # a variant's value as the traced one: its dtype, and its shape (e.g. rows x features for a layer's output)
  typed = lambda value: None if value is None else jnp.asarray(value, cut.value.dtype).reshape(cut.value.shape)
  tail = lambda value: cut.tail.evaluate(*boundary, typed(value))[0]
  one = lambda v: spec.score(net, spec.cut, variables, aux, inputs, y, v, tail)
  return jax.vmap(one)(variants_B)


def _chunk(net, spec, mesh, variables, aux, variants_VxB, x, y):
  boundary, inputs = _head(net, spec, mesh, variables, aux, x)
  x_shape = (tuple(x.shape), np.dtype(x.dtype))
  return jax.lax.map(lambda vb: _score_batch(net, spec, x_shape, variables, aux, boundary, inputs, y, vb),
                     variants_VxB)


def _all_chunks(net, spec, mesh, variables, aux, variants_VxB, xs, ys):
  def body(totals, chunk):
    part = _chunk(net, spec, mesh, variables, aux, variants_VxB, *chunk)
    return jax.tree.map(jnp.add, totals, part), None

  shapes = jax.eval_shape(functools.partial(_chunk, net, spec, mesh), variables, aux, variants_VxB, xs[0], ys[0])
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.lax.scan(body, zeros, (xs, ys))[0]


_STATIC = ("net", "spec", "mesh")
_all_chunks_jit = jax.jit(_all_chunks, static_argnames=_STATIC)
_head_jit = jax.jit(_head, static_argnames=_STATIC)
_score_batch_jit = jax.jit(_score_batch, static_argnames=("net", "spec", "x_shape"))


def _arguments(variables, x, y, spec: Pass, variants, aux, mesh):
  """The arguments of the compiled pieces: data padded to chunks, variants to batches, every array placed
  on every device of the mesh (of every process), each data chunk then split over its "data" axis."""
  mesh = mesh or parallel.data_mesh()
  xs, ys = pad_chunks(x, y, spec.data_chunk, multiple=mesh.shape["data"])
  variants_VxB, v = _batched(jax.tree.map(np.asarray, variants), spec.variant_batch)
  put = lambda tree: parallel.replicate(jax.tree.map(np.asarray, tree), mesh)
  return mesh, put(xs), put(ys), put(dict(variables)), put(variants_VxB), put(aux), v


def lower(net: Network, variables: Mapping, x, y, spec: Pass, variants, aux: Any = None, *, mesh=None):
  """The whole evaluation as the one compiled program of the accelerator form, lowered, not run: for
  XLA's analyses (`lower(...).compile().memory_analysis()`, `.cost_analysis()`)."""
  mesh, xs, ys, variables, variants_VxB, aux, _ = _arguments(variables, x, y, spec, variants, aux, mesh)
  return _all_chunks_jit.lower(net, spec, mesh, variables, aux, variants_VxB, xs, ys)


def evaluate(
  net: Network,
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
  mesh, xs, ys, variables, variants_VxB, aux, v = _arguments(variables, x, y, spec, variants, aux, mesh)
  unbatch = lambda a: np.asarray(a).reshape(-1, *a.shape[2:])[:v]
  if not host_loop(variables):
    totals = _all_chunks_jit(net, spec, mesh, variables, aux, variants_VxB, xs, ys)
    return jax.tree.map(unbatch, parallel.fetch(totals))
  totals = None
  batches = [jax.tree.map(lambda a, i=i: a[i], variants_VxB) for i in range(jax.tree.leaves(variants_VxB)[0].shape[0])]
  x_shape = (tuple(xs.shape[1:]), np.dtype(xs.dtype))
  for c in range(xs.shape[0]):
    xc, yc = xs[c], ys[c]
    boundary, inputs = parallel.one_at_a_time(_head_jit(net, spec, mesh, variables, aux, xc), mesh)
    parts = [parallel.one_at_a_time(_score_batch_jit(net, spec, x_shape, variables, aux, boundary, inputs, yc, vb), mesh)
             for vb in batches]
    part = jax.tree.map(lambda *p: jnp.stack(p), *parts)
    totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
  return jax.tree.map(unbatch, parallel.fetch(totals))


def _unchanged_score(net, cut, variables, aux, inputs, y, variant, tail):
  del cut, aux, variant, inputs
  return loss_and_correct(tail(None), y)


def loss_and_accuracy(net: Network, variables: Mapping, x, y, *, data_chunk: int = 500) -> tuple[float, float]:
  """(mean loss, accuracy) of the unchanged network on (x, y)."""
  spec = Pass(Cut("none"), keep_inputs, _unchanged_score, variant_batch=1, data_chunk=data_chunk)
  loss, correct = evaluate(net, variables, x, y, spec, jnp.zeros(1))
  return float(loss[0]) / len(y), float(correct[0]) / len(y)


@functools.partial(jax.jit, static_argnames="net")
def _labels(net, variables, x):
  return jnp.argmax(net.apply(variables, x), -1)


def predict(net: Network, variables: Mapping, x, *, chunk: int = 500) -> np.ndarray:
  """Predicted labels of the unchanged network on `x`, one compiled call per chunk."""
  xs, _ = pad_chunks(x, np.zeros(len(x)), chunk)
  variables = jax.tree.map(jnp.asarray, dict(variables))
  labels = [np.asarray(_labels(net, variables, jnp.asarray(xc))) for xc in xs]
  return np.concatenate(labels)[: len(x)].astype(np.int32)

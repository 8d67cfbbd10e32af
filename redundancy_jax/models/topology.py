"""The layers of any network, found from the model itself (its variables and traced forwards), and which
of them have units that can be removed exactly (DEFINITIONS.md section 8).

  found = layers(net, (28, 28, 1))          # every Dense and Conv layer, in call order
  check(net, "fc1", prunable=True)            # at the network's own image shape

A unit of a Dense or Conv layer is one of its output features (channels). Removing it sets the layer's
output j, after its bias and after the BatchNorm that directly follows it (if any), to zero wherever it
is consumed. That is exact, and what masking the parameter pytree does (the kernel's output slice, the
bias, the BatchNorm's scale and offset), when between the layer (or its BatchNorm) and what reads it
only elementwise operations that map 0 to 0 (ReLU, GELU, tanh, dropout at evaluation), pooling and
reshapes lie. It is read off a traced forward in which the layer's output is multiplied by a per-unit
scale (`jaxprs`): the computation that depends on the scale, up to the operations that consume it
linearly (a Dense or Conv contraction, or an addition or concatenation with another data path: a skip
connection), must carry exact zeros from the removed units, checked numerically on randomised
variables. A layer is not prunable, with the reason, when
- its units reach the logits without such a consumer (the classifier);
- a LayerNorm, GroupNorm or RMSNorm normalises its units together;
- something maps a removed unit's 0 to a nonzero value (a sigmoid, a BatchNorm after the activation);
- its kernel is used at two call sites, or its output enters a loop or conditional (not followed).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.extend import core as jcore

from redundancy_jax.core import jaxprs
from redundancy_jax.core.errors import BadOption
from redundancy_jax.models.network import Network

UNIT_KINDS = ("dense", "conv")
CONTRACTIONS = ("dot_general", "conv_general_dilated")
MERGES = ("add", "sub", "add_any", "concatenate")  # with another data path: a consumer (skip connections)
UNFOLLOWED = ("while", "scan", "cond", "switch")
_MARK = "redundancy_jax:in:"


@dataclasses.dataclass(frozen=True)
class LayerInfo:
  """One Dense or Conv layer: `units` output features, the BatchNorm that follows it (`norm`), whether its
  units are removable (else `reason`), and the one Dense/Conv layer that reads them (`consumer`, with
  `positions` input rows per unit, channel last) when there is exactly one and nothing else."""

  name: str
  kind: str
  units: int
  kernel_shape: tuple[int, ...]
  norm: str | None = None
  prunable: bool = True
  reason: str = ""
  classifier: bool = False
  consumer: str | None = None
  consumer_kind: str | None = None
  positions: int = 0
  conv: tuple = ()  # a Conv consumer's convolution (`lax.conv_general_dilated` parameters, sorted items)


def kernel_path(name: str) -> tuple[str, ...]:
  return (*name.split("/"), "kernel")


def get(tree: dict, path: Sequence[str]):
  """The node of a nested dict at `path` (a layer name's parts)."""
  for key in path:
    tree = tree[key]
  return tree


def replace(tree: dict, path: Sequence[str], value) -> dict:
  """`tree` with the node at `path` replaced (the dicts along it copied, nothing else)."""
  if not path:
    return value
  return {**tree, path[0]: replace(tree[path[0]], path[1:], value)}


def kernel_layers(params) -> list[str]:
  """Every layer with a "kernel" in a parameter tree (or {"params": ...}), by "/"-joined path."""
  params = params.get("params", params)
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  return ["/".join(str(k.key) for k in path[:-1]) for path, _ in paths if str(getattr(path[-1], "key", "")) == "kernel"]


def kernel(variables: dict, name: str):
  """Layer `name`'s kernel in `variables` ({"params": ...} or a parameter tree)."""
  params = variables.get("params", variables)
  return get(params, kernel_path(name))


# ----------------------------------------------------------------------------- finding the layers


@functools.cache
def layers(net: Network, image_shape: tuple[int, ...]) -> tuple[LayerInfo, ...]:
  """Every Dense and Conv layer of `net` for inputs of `image_shape`, in call order, with what removing
  its units means (module docstring). One traced forward for all layers, evaluated once eagerly; each
  layer's check reruns only the few operations between it and what reads it."""
  image_shape = tuple(image_shape)
  variables = _randomised(jax.eval_shape(lambda key: net.init(key, image_shape), jax.random.key(0)))
  x = jax.random.uniform(jax.random.key(1), (8, *image_shape), jnp.float32)
  calls = _record(net, variables, x)
  counts: dict[str, int] = {}
  for name, *_ in calls:
    counts[name] = counts.get(name, 0) + 1
  found = {}
  for i, (name, kind, x_in, y_out) in enumerate(calls):
    if kind in UNIT_KINDS and name not in found:
      norm = next((n for n, k, xi, _ in calls[i + 1:] if k == "batch_norm" and xi is y_out), None)
      shape = tuple(np.shape(kernel(variables, name)))
      found[name] = LayerInfo(name, kind, shape[-1], shape, norm)
  probed = [l for l in found.values() if counts[l.name] == 1]
  results = _probe(net, variables, x, probed)
  return tuple(dataclasses.replace(l, prunable=False, reason=f"its kernel is used at {counts[l.name]} call sites")
               if counts[l.name] > 1 else results[l.name] for l in found.values())


def of(net: Network) -> tuple[LayerInfo, ...]:
  """`layers` at the network's own image shape."""
  if not net.image_shape:
    raise BadOption(f"{net.spec}: build the network with its image_shape to find its layers")
  return layers(net, tuple(net.image_shape))


def info(net: Network, name: str) -> LayerInfo:
  return check(net, name)


def names(net: Network, *, prunable: bool = False) -> tuple[str, ...]:
  """The Dense and Conv layers' names, in call order (with `prunable`: those whose units can be removed)."""
  return tuple(l.name for l in of(net) if l.prunable or not prunable)


def check(net: Network, name: str, *, prunable: bool = False, error: type = BadOption) -> LayerInfo:
  """Layer `name`'s info; `error` listing the valid layers when it is not one, or, with `prunable`, giving
  the reason when its units cannot be removed."""
  found = of(net)
  valid = [l.name for l in found if l.prunable or not prunable]
  what = "prunable layers" if prunable else "Dense and Conv layers"
  for info in found:
    if info.name == name:
      if prunable and not info.prunable:
        raise error(f"layer {name!r} of {net.spec} is not prunable: {info.reason}; {what}: {', '.join(valid)}")
      return info
  raise error(f"unknown layer {name!r} of {net.spec}; {what}: {', '.join(valid)}")


def classifier(net: Network) -> str:
  """The layer whose units are the logits (the last such)."""
  found = [l.name for l in of(net) if l.classifier]
  if not found:
    raise BadOption(f"{net.spec} has no Dense or Conv layer whose outputs are the logits")
  return found[-1]


def _randomised(shapes: dict) -> dict:
  """Random variables of the given shapes (nothing is compiled): kernels N(0, 1/fan_in), BatchNorm scales
  and variances around 1 (variances positive), everything else N(0, 0.1^2). A zero bias or a unit running
  variance, as at initialisation, could hide an operation that maps 0 to a nonzero value."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(2)
  out = []
  for path, leaf in leaves:
    name, shape = str(getattr(path[-1], "key", "")), tuple(leaf.shape)
    if name == "kernel":
      value = rng.normal(0.0, 1.0 / np.sqrt(max(1, int(np.prod(shape[:-1])))), shape)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, shape)
    elif name == "scale":
      value = 1.0 + 0.1 * rng.normal(size=shape)
    else:
      value = 0.1 * rng.normal(size=shape)
    out.append(jnp.asarray(value, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def _record(net: Network, variables: dict, x) -> list[tuple]:
  """(name, kind, input tracer, output tracer) of every hooked call of a traced forward."""
  calls = []

  def hook(name, kind, x_in, call):
    y = call(x_in)
    calls.append((name, kind, x_in, y))
    return y

  jax.make_jaxpr(lambda v, x: net.apply(v, x, hook=hook))(variables, x)
  return calls


def _probe(net: Network, variables: dict, x, infos: Sequence[LayerInfo]) -> dict[str, LayerInfo]:
  """Each layer's info with prunability, reason and consumer, from one forward in which every layer's
  output (after its BatchNorm) is scaled per unit by an input of its own."""
  at = {(l.norm or l.name): i for i, l in enumerate(infos)}
  kinds, holder = {}, [None]

  def hook(name, kind, x_in, call):
    kinds[name] = kind
    y = call(checkpoint_name(x_in, _MARK + name))  # marks what each layer reads
    return y * holder[0][at[name]] if name in at else y

  def f(v, x, scales):
    holder[0] = scales
    return net.apply(v, x, hook=hook)

  ones = [jnp.ones((l.units,), jnp.float32) for l in infos]
  graph = jaxprs.trace(f, variables, x, ones)
  scale_vars = graph.invars[-len(infos):] if infos else ()
  from_x = graph.depends([graph.invars[-len(infos) - 1]])
  marks = {e.outvars[0]: e.params["name"][len(_MARK):] for e in graph.eqns
           if e.primitive.name == "name" and str(e.params.get("name", "")).startswith(_MARK)}
  regions = [_region(graph, v, from_x, marks, kinds) for v in scale_vars]
  base = graph._run([*jax.tree.leaves((variables, x)), *ones])  # every value once, eagerly (no compilation)
  out = {}
  for scale_var, info, region in zip(scale_vars, infos, regions):
    run = lambda scale, region=region, scale_var=scale_var: _rerun(region, base, scale_var, scale)
    out[info.name] = _verdict(info, region, run, marks, kinds)
  return out


def _rerun(region: dict, base: dict, scale_var, scale) -> list:
  """What the consumers of one layer read with its scale set to `scale`: only the region's equations run
  again (eagerly), every other value is the base forward's."""
  env = {**base, scale_var: scale}
  for e in region["eqns"]:
    values = e.primitive.bind(*(jaxprs._read(env, a) for a in e.invars), **e.params)
    for var, value in zip(e.outvars, values if e.primitive.multiple_results else (values,)):
      if not isinstance(var, jcore.DropVar):
        env[var] = value
  return [env[r] for _, r in region["consumers"]]


def _region(graph, scale_var, from_x, marks, kinds) -> dict:
  """What depends on one layer's scale up to the operations consuming it (module docstring)."""
  region, consumers, norms, loops, eqns = {scale_var}, [], [], [], []
  for e in graph.eqns:
    reads = [a for a in e.invars if isinstance(a, jcore.Var) and a in region]
    if not reads:
      continue
    name = e.primitive.name
    if name == "name" and kinds.get(marks.get(e.outvars[0])) == "norm":
      norms.append(marks[e.outvars[0]])
    if name in CONTRACTIONS:
      consumers.append((e, reads[0]))
    elif name in MERGES and any(isinstance(a, jcore.Var) and a in from_x and a not in region for a in e.invars):
      consumers.append((e, reads[0]))
    elif name in UNFOLLOWED:
      loops.append(name)
    else:
      region.update(v for v in e.outvars if not isinstance(v, jcore.DropVar))
      eqns.append(e)
  outputs = any(isinstance(a, jcore.Var) and a in region for a in graph.outvars)
  return {"consumers": consumers, "norms": norms, "loops": loops, "outputs": outputs, "eqns": eqns}


def _verdict(info: LayerInfo, region: dict, run, marks, kinds) -> LayerInfo:
  if region["outputs"]:
    return dataclasses.replace(info, prunable=False, classifier=True,
                               reason="its units are the network's outputs (the classifier)")
  if region["norms"]:
    return dataclasses.replace(info, prunable=False, reason=f"{', '.join(dict.fromkeys(region['norms']))} "
                               f"normalises its units together (a LayerNorm, GroupNorm or RMSNorm after it)")
  if region["loops"]:
    return dataclasses.replace(info, prunable=False, reason=f"its output enters a {region['loops'][0]} (a loop or "
                               f"conditional this analysis does not follow)")
  # exactness, numerically: half the units scaled by 0, then by another value; whatever changed in what the
  # consumers read must be exactly 0 in the first run
  m = info.units
  removed = np.random.default_rng(0).permutation(m)[: max(1, m // 2)]
  scale_a = np.ones(m, np.float32)
  scale_a[removed] = 0.0
  scale_b = scale_a.copy()
  scale_b[removed] = 1.7
  a, b = run(jnp.asarray(scale_a)), run(jnp.asarray(scale_b))
  for va, vb in zip(a, b):
    va, vb = np.asarray(va), np.asarray(vb)
    if np.any(va[va != vb] != 0):
      return dataclasses.replace(info, prunable=False, reason="an operation between it and the layers reading it "
                                 "maps a removed unit's 0 to a nonzero value (f(0) != 0: a sigmoid, or a BatchNorm "
                                 "after the activation)")
  consumers = region["consumers"]
  if len(consumers) == 1 and consumers[0][1] in marks and kinds.get(marks[consumers[0][1]]) in UNIT_KINDS:
    changed = np.asarray(a[0] != b[0]).reshape(-1, np.shape(a[0])[-1]).any(0)
    d = changed.shape[0]
    expected = np.isin(np.arange(d) % m, removed) if d % m == 0 else None
    if expected is not None and changed.any() and not np.any(changed & ~expected):  # channel last, tiled
      c = marks[consumers[0][1]]
      eqn = consumers[0][0]
      conv = ()
      if eqn.primitive.name == "conv_general_dilated" and eqn.invars[0] is consumers[0][1]:
        conv = tuple(sorted((k, v) for k, v in eqn.params.items() if k not in ("precision", "preferred_element_type")))
      return dataclasses.replace(info, consumer=c, consumer_kind=kinds[c], positions=d // m, conv=conv)
  return info


# ----------------------------------------------------------------------------- a layer's activations


@functools.lru_cache(maxsize=32)
def _activation_graph(net: Network, layer: str, norm: str | None, shapes) -> tuple[jaxprs.Graph, int]:
  variables = jax.tree.unflatten(shapes[0], [jax.ShapeDtypeStruct(s, d) for s, d in shapes[1]])
  x = jax.ShapeDtypeStruct(*shapes[2])
  at, holder = norm or layer, [None]

  def hook(name, kind, x_in, call):
    y = call(x_in)
    return y * holder[0] if name == at else y

  def f(v, x, scale):
    holder[0] = scale
    return net.apply(v, x, hook=hook)

  units = get(variables.get("params", variables), kernel_path(layer)).shape[-1]
  graph = jaxprs.trace(f, variables, x, jax.ShapeDtypeStruct((units,), jnp.float32))
  scale = graph.invars[-1]
  shape = None  # the layer's output shape, once the scale meets it
  chain, activation, last_full = {scale}, None, None
  for e in graph.eqns:
    reads = [a for a in e.invars if isinstance(a, jcore.Var) and a in chain]
    if not reads:
      continue
    outs = [v for v in e.outvars if not isinstance(v, jcore.DropVar)]
    full = [a for a in reads if shape is not None and a.aval.shape == shape]
    if e.primitive.name in CONTRACTIONS + MERGES + UNFOLLOWED or (full and any(v.aval.shape != shape for v in outs)):
      activation = full[-1] if full else None
      break
    if shape is None and e.primitive.name == "mul" and outs[0].aval.ndim > 1:  # the scaled output
      shape = outs[0].aval.shape
    chain.update(outs)
    if shape is not None and outs and outs[0].aval.shape == shape:
      last_full = outs[0]
  activation = activation or last_full  # the classifier: its output is the logits
  if activation is None:
    raise BadOption(f"layer {layer!r} of {net.spec}: no activation found after it")
  return graph, activation


def activation_graph(net: Network, variables: dict, x, layer: str) -> tuple[jaxprs.Graph, Any]:
  """(graph, activation): the network traced for inputs shaped like `x`, as a graph of inputs (variable
  leaves..., x, scale) and output the logits, where `scale` (units,) multiplies the layer's output after the
  BatchNorm that follows it (where removal zeroes a unit), and `activation` the var of its activations
  (`activations`). Cached per network, layer and shapes."""
  info = check(net, layer)
  leaves, treedef = jax.tree.flatten(dict(variables))
  shapes = (treedef, tuple((tuple(np.shape(a)), np.dtype(a.dtype)) for a in leaves), (tuple(np.shape(x)), np.dtype(x.dtype)))
  return _activation_graph(net, layer, info.norm, shapes)


def activations(net: Network, variables: dict, x, layer: str) -> jax.Array:
  """Layer `layer`'s activations on `x`: its output after the BatchNorm that follows it and the
  elementwise operations (the nonlinearity) before anything pools, reshapes or reads it, e.g. ReLU(BN(conv))
  per position, (N, ..., units)."""
  graph, activation = activation_graph(net, variables, x, layer)
  return _values(graph, activation, jax.tree.leaves(dict(variables)), x, check(net, layer).units)


@functools.partial(jax.jit, static_argnames=("graph", "activation", "units"))
def _values(graph, activation, leaves, x, units):
  return graph.values([*leaves, x, jnp.ones((units,), jnp.float32)], [activation])[0]

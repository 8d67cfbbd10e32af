"""Any Flax model, linen or NNX, as one pure-functional network: `init(key, image_shape) -> variables`,
`apply(variables, x) -> logits`, `apply_train(variables, x) -> (logits, batch_stats)`. Every analysis, the
training loop and the report's own models go through it (DEFINITIONS.md section 8).

  net = build("path/to/my_models.py:resnet", num_classes=10, mean=ds.mean, std=ds.std)
  variables = net.init(jax.random.key(0), (28, 28, 1))       # {"params": ..., "batch_stats"?: ...}
  logits = net.apply(variables, uint8_images)                 # standardised by mean and std first

- `--model` names a registered model (`models.MODELS`) or a factory `FILE.py:NAME` / `MODULE:NAME`, a
  callable `factory(num_classes)` returning a `flax.linen.Module` or a `flax.nnx.Module`; an NNX factory
  may also take `rngs=` (an `nnx.Rngs`), so that each replica is seeded (one that does not is used as
  it is, the same initial weights for every seed).
- Inputs: NHWC images; uint8 ones are scaled to [0, 1], then standardised per channel by the training
  data's `mean` and `std`, before the model sees them (the report's models and a user's alike).
- linen: called as `apply(variables, x, train=...)` when its `__call__` takes `train` (the flax examples'
  convention), BatchNorm statistics in the "batch_stats" collection. NNX: `nnx.split` into a graph
  definition and its `nnx.Param` / `nnx.BatchStat` state, merged back for each call (`.train()` /
  `.eval()` switch BatchNorm and Dropout); variables are {"params", "batch_stats"} pure dicts whose keys
  are strings (a list's index "0"), so that they save and load like linen's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import sys
import threading
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from redundancy_jax.core.errors import BadOption
from redundancy_jax.models import conv

FRAMEWORKS = ("linen", "nnx")


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """Images to float32 standardised per channel; uint8 images are first scaled to [0, 1]."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Network:
  """A Flax model with its input standardisation, hashable (a static argument of the compiled steps).

  `module` is the linen Module, or the NNX graph definition; `spec` the name it was built from (a
  registered model or FILE.py:FACTORY). For NNX, `template` holds the split state's variable types and
  `factory` builds a freshly seeded model; neither takes part in equality."""

  spec: str
  module: Any
  framework: str = "linen"
  mean: tuple[float, ...] = (0.0,)
  std: tuple[float, ...] = (1.0,)
  image_shape: tuple[int, ...] = ()  # of one input (H, W, C): what its layers are traced with
  template: Any = dataclasses.field(default=None, compare=False, repr=False)
  factory: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

  # --- what every caller uses

  def init(self, key: jax.Array, image_shape: Sequence[int]) -> dict:
    """Initial variables ({"params"} and "batch_stats" where the model has BatchNorm) for one image shape."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    if self.framework == "linen":
      kwargs = {"train": False} if _takes_train(self.module) else {}
      return dict(self.module.init(key, x, **kwargs))
    if self.factory is None:
      return self.variables_of(self.template)
    _, *states = _split(self.factory(rngs=nnx.Rngs(key)), self.spec)
    return self.variables_of(states)

  def apply(self, variables: dict, x: jax.Array, *, train: bool = False, hook: Hook | None = None) -> jax.Array:
    """The logits for images `x` (standardised first), BatchNorm with its running statistics unless
    `train` (then the batch's, statistics not returned: `apply_train` returns them). `hook(name, kind, x,
    call)` is called instead of every Dense, Conv and normalisation layer (`LINEN_KINDS`, `NNX_KINDS`) with
    the layer's name ("/"-joined path), kind, input, and `call(x)` computing the layer on an input; it
    returns the layer's output."""
    return self._call(variables, x, train, hook)[0]

  def apply_train(self, variables: dict, x: jax.Array, rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """(logits, updated batch_stats) in training mode; `rng` is a linen model's "dropout" stream."""
    return self._call(variables, x, True, rng=rng)

  @property
  def standardizes(self) -> bool:
    return tuple(self.mean) != (0.0,) or tuple(self.std) != (1.0,)

  # --- linen and NNX

  def _call(self, variables, x, train, hook=None, rng=None):
    x = normalize(x, self.mean, self.std)
    onednn = train and conv.conv_choice() == "onednn" and jax.default_backend() == "cpu"
    if self.framework == "linen":
      kwargs = {"train": train} if _takes_train(self.module) else {}
      if rng is not None:
        kwargs["rngs"] = {"dropout": rng}
      with _linen_hooked(hook), _linen_onednn(onednn):
        if train and "batch_stats" in variables:
          logits, updates = self.module.apply(variables, x, mutable=["batch_stats"], **kwargs)
          return logits, updates["batch_stats"]
        return self.module.apply(variables, x, **kwargs), variables.get("batch_stats", {})
    model = self.merge(variables)
    model.train() if train else model.eval()
    if onednn:
      _nnx_onednn(model)
    with _nnx_hooked(model, hook):
      logits = model(x)
    stats = self.variables_of(_split(model, self.spec)[1:]).get("batch_stats", {}) if train else None
    return logits, stats if stats is not None else variables.get("batch_stats", {})

  def merge(self, variables: dict) -> nnx.Module:
    """The NNX module holding `variables` (inside a traced function, arrays may be tracers)."""
    states = [_with_values(template, variables.get(collection, {}))
              for template, collection in zip(self.template, ("params", "batch_stats"))]
    return nnx.merge(self.module, *states)

  @staticmethod
  def variables_of(states) -> dict:
    """{"params", "batch_stats"?} pure dicts (string keys) of an NNX (params, batch-stat) state pair."""
    params, stats = states
    out = {"params": _pure(params)}
    if stats is not None and len(nnx.to_flat_state(stats)):
      out["batch_stats"] = _pure(stats)
    return out


# ----------------------------------------------------------------------------- hooks: the layers' calls

Hook = Callable[[str, str, jax.Array, Callable[[jax.Array], jax.Array]], jax.Array]
# The layers a hook sees, by kind: the units of "dense" and "conv" layers are analysed, the normalisations
# decide what removing one means (DEFINITIONS.md section 8).
LINEN_KINDS = ((nn.Dense, "dense"), (nn.Conv, "conv"), (nn.BatchNorm, "batch_norm"), (nn.LayerNorm, "norm"),
               (nn.GroupNorm, "norm"), (nn.RMSNorm, "norm"))
NNX_KINDS = ((nnx.Linear, "dense"), (nnx.Conv, "conv"), (nnx.BatchNorm, "batch_norm"), (nnx.LayerNorm, "norm"),
             (nnx.GroupNorm, "norm"), (nnx.RMSNorm, "norm"))
_PATCH_LOCK = threading.RLock()


def kind_of(module) -> str | None:
  for cls, kind in LINEN_KINDS + NNX_KINDS:
    if isinstance(module, cls):
      return kind
  return None


@contextlib.contextmanager
def _linen_hooked(hook: Hook | None):
  if hook is None:
    yield
    return

  def interceptor(next_fun, args, kwargs, context):
    kind = kind_of(context.module) if context.method_name == "__call__" else None
    if kind is None or not args:
      return next_fun(*args, **kwargs)
    name = "/".join(context.module.scope.path)
    return hook(name, kind, args[0], lambda x: next_fun(x, *args[1:], **kwargs))

  with nn.intercept_methods(interceptor):
    yield


# ----------------------------------------------------------------------------- a user's convolutions, trained


@contextlib.contextmanager
def _linen_onednn(on: bool):
  """While inside (`on`: a training call under `REDUNDANCY_JAX_CONV=onednn`), a linen `nn.Conv` that uses
  XLA's convolution computes through `conv.onednn_conv_general_dilated` (a clone of it with that
  function, applied to its own parameters): its stride-1 SAME 3x3 convolutions train with oneDNN's
  parts, with the same forward values."""
  if not on:
    yield
    return

  def interceptor(next_fun, args, kwargs, context):
    m = context.module
    if (context.method_name != "__call__" or not isinstance(m, nn.Conv) or m.conv_general_dilated is not None
        or m.conv_general_dilated_cls is not None):
      return next_fun(*args, **kwargs)
    clone = m.clone(parent=None, conv_general_dilated=conv.onednn_conv_general_dilated)
    return clone.apply({"params": m.variables["params"]}, *args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield


def _nnx_onednn(model: nnx.Module) -> None:
  """`_linen_onednn` for NNX: the `nnx.Conv` layers of `model` (merged for this call only) that use XLA's
  convolution compute through `conv.onednn_conv_general_dilated`."""
  for _, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Conv) and node.conv_general_dilated is jax.lax.conv_general_dilated:
      node.conv_general_dilated = conv.onednn_conv_general_dilated


@contextlib.contextmanager
def _nnx_hooked(model: nnx.Module, hook: Hook | None):
  """While inside, the calls of `model`'s layers of `NNX_KINDS` go through `hook` (their classes'
  `__call__` is wrapped, under a lock, and restored on exit; other instances are not affected)."""
  if hook is None:
    yield
    return
  names = {id(node): "/".join(map(str, path)) for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)}
  with _PATCH_LOCK:
    originals = {cls: cls.__dict__.get("__call__") for cls, _ in NNX_KINDS}
    for cls, kind in NNX_KINDS:
      original = cls.__call__

      def wrapped(self, x, *args, _original=original, _kind=kind, **kwargs):
        name = names.get(id(self))
        if name is None:
          return _original(self, x, *args, **kwargs)
        return hook(name, _kind, x, lambda x_: _original(self, x_, *args, **kwargs))

      cls.__call__ = wrapped
    try:
      yield
    finally:
      for cls, original in originals.items():
        if original is None:  # it inherited its __call__
          del cls.__call__
        else:
          cls.__call__ = original


def _takes_train(module: nn.Module) -> bool:
  return "train" in inspect.signature(type(module).__call__).parameters


def _pure(state) -> dict:
  tree: dict = {}
  for path, var in nnx.to_flat_state(state):
    node = tree
    for key in path[:-1]:
      node = node.setdefault(str(key), {})
    node[str(path[-1])] = var.get_value()
  return tree


def _with_values(template, values: dict):
  def value(path):
    node = values
    for key in path:
      node = node[str(key)]
    return node

  return nnx.from_flat_state([(path, var.replace(value(path))) for path, var in nnx.to_flat_state(template)])


def _split(model: nnx.Module, spec: str):
  """(graphdef, params, batch_stats) of an NNX module; anything else in its state is refused by name."""
  graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  if len(nnx.to_flat_state(rest)):
    kinds = sorted({type(v).__name__ for _, v in nnx.to_flat_state(rest)})
    raise BadOption(f"the NNX model of {spec} holds state other than nnx.Param and nnx.BatchStat ({', '.join(kinds)}: "
                    f"e.g. RNG streams kept for Dropout), which this version does not thread through training; build "
                    f"it without stored rngs (deterministic) or as a linen module")
  return graphdef, params, stats


# ----------------------------------------------------------------------------- building from --model


def is_factory_spec(spec: str) -> bool:
  """Whether `spec` names a factory (FILE.py:NAME or MODULE:NAME) rather than a registered model."""
  return ":" in spec


@functools.cache
def load_factory(spec: str) -> Callable:
  """The callable FILE.py:NAME or MODULE:NAME names; `BadOption` naming what is missing otherwise. A file's
  folder goes on `sys.path` first, as for `python FILE.py`, so that it may import modules beside it."""
  where, _, name = spec.rpartition(":")
  if not where or not name:
    raise BadOption(f"--model={spec!r}: give a registered model or FILE.py:FACTORY / MODULE:FACTORY")
  if where.endswith(".py"):
    path = os.path.abspath(where)
    if not os.path.exists(path):
      raise BadOption(f"--model={spec!r}: no file {path}")
    folder = os.path.dirname(path)
    if folder not in sys.path:  # as `python FILE.py` does: the file's own imports of modules beside it work
      sys.path.insert(0, folder)
    module_name = f"_redundancy_jax_user_{abs(hash(path))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    loader.loader.exec_module(module)
  else:
    try:
      module = importlib.import_module(where)
    except ImportError as e:
      raise BadOption(f"--model={spec!r}: cannot import {where} ({e}); give FILE.py:FACTORY or an importable "
                      f"MODULE:FACTORY") from None
  factory = getattr(module, name, None)
  if not callable(factory):
    names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
    raise BadOption(f"--model={spec!r}: {where} has no callable {name!r}; its callables: {', '.join(names)}")
  return factory


def from_module(spec: str, model: Any, *, mean=(0.0,), std=(1.0,), image_shape=(),
                factory: Callable | None = None) -> Network:
  """The Network of a built linen or NNX module; for NNX, `factory(rngs=...)` re-seeds it (optional)."""
  mean, std, image_shape = tuple(float(v) for v in mean), tuple(float(v) for v in std), tuple(image_shape)
  if isinstance(model, nn.Module):
    return Network(spec, model, "linen", mean, std, image_shape)
  if isinstance(model, nnx.Module):
    graphdef, params, stats = _split(model, spec)
    return Network(spec, graphdef, "nnx", mean, std, image_shape, template=(params, stats), factory=factory)
  raise BadOption(f"--model={spec!r}: the factory returned {type(model).__name__}, not a flax.linen.Module or a "
                  f"flax.nnx.Module")


def build_user(spec: str, num_classes: int, *, mean=(0.0,), std=(1.0,), image_shape=(), seed: int = 0) -> Network:
  """The network a user's factory builds: `factory(num_classes)`, an NNX one with `rngs=nnx.Rngs(seed)`
  when it takes `rngs` (then each replica's init re-seeds it)."""
  factory = load_factory(spec)
  takes_rngs = "rngs" in inspect.signature(factory).parameters
  model = factory(num_classes, rngs=nnx.Rngs(seed)) if takes_rngs else factory(num_classes)
  reseed = functools.partial(factory, num_classes) if takes_rngs and isinstance(model, nnx.Module) else None
  return from_module(spec, model, mean=mean, std=std, image_shape=image_shape, factory=reseed)

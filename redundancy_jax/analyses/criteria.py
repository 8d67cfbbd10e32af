"""Pruning criteria, declared once (DEFINITIONS.md section 2): each turns a layer into a removal order.

A criterion scores the m units of a layer; its order removes the lowest score first when it keeps the
largest ("max_..."), the highest first when it keeps the smallest ("min_..."), ties to the lower index.
The sweep, `--criteria`, `--help`, the printed table, Figure 2's legend and panels, the page and
DEFINITIONS.md's table all read `REGISTRY`:

  criteria.names()                                  # every registered criterion, in registration order
  ev = criteria.Evidence(net, variables, "fc1", data=(train_x, train_y))
  order = criteria.get("max_taylor").order(ev, key)  # int32[m], the first removed first

A new criterion is one `register` call (from any module, a test file included):

  criteria.register(criteria.Criterion("max_bias", "keeps the units with the largest bias", needs=criteria.WEIGHTS,
                                       order=criteria.by_score(lambda ev: ev.bias)))

What a criterion reads (`needs`): the layer's weights; activations on data; gradients on data; the
BatchNorm that follows the layer; or nothing but a random key. Data-aware criteria read `Evidence.data`,
training images (never the images the curves are evaluated on), through one compiled pass per layer
(`data_statistics`) that every data-aware criterion shares.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.analyses.units import cosine_similarity, unit_matrix, unit_norms
from redundancy_jax.core import variants
from redundancy_jax.core.errors import BadOption
from redundancy_jax.models import Network, topology

# What a criterion reads.
WEIGHTS, ACTIVATIONS, GRADIENTS, BATCHNORM, RANDOM = "weights", "activations", "gradients", "batchnorm", "random"
NEEDS = {
  WEIGHTS: "the layer's weights",
  ACTIVATIONS: "the layer's activations on training images",
  GRADIENTS: "the loss's gradient on training images",
  BATCHNORM: "the scale of the BatchNorm that follows the layer",
  RANDOM: "a random key",
}
DATA_NEEDS = (ACTIVATIONS, GRADIENTS)
# Figure 2's panels: the report's criteria, and those the field added since (each panel also draws the
# report's best weight-based criterion and random pruning, for reference).
REPORT, FIELD = "the report's criteria", "criteria from the field"
# Contributions within TIE_ULPS * m * eps64 * max|c| of the best count as tied (lower index first): a
# small multiple of the error bound of summing m float64 terms, far below any gap between distinct
# contributions of real weights (a tie window in float32 merged distinct values and changed the
# orders; BUILD_NOTES.md).
TIE_ULPS = 4
DATA_EXAMPLES = 1024  # training images the data-aware criteria read, by default
DATA_CHUNK = 128  # images per step of their compiled pass


class CriterionError(BadOption):
  """An unknown criterion, or one that cannot be computed on a layer."""


@dataclasses.dataclass(frozen=True)
class Criterion:
  """One pruning criterion: `order(evidence, key) -> int32[m]` (the first removed first)."""

  name: str
  help: str  # one line: what it keeps and what it removes first
  needs: str  # one of NEEDS
  order: Callable[["Evidence", jax.Array | None], np.ndarray]
  deterministic: bool = True  # False: averaged over random keys (mean and spread)
  style: tuple[str, str] = ("black", "-")  # matplotlib colour and line style
  panel: str = FIELD  # Figure 2's panel
  source: str = ""  # where it comes from (a paper), for DEFINITIONS.md and the page

  def unavailable(self, info: topology.LayerInfo) -> str:
    """Why the criterion cannot be computed on the layer ("" when it can)."""
    if self.needs == BATCHNORM and info.norm is None:
      return f"no BatchNorm follows {info.name}"
    return ""


REGISTRY: dict[str, Criterion] = {}


def register(criterion: Criterion) -> Criterion:
  """Adds `criterion` (a new name, or the same declaration again, e.g. a notebook cell run twice: it
  replaces the old one); returns it."""
  if criterion.needs not in NEEDS:
    raise CriterionError(f"criterion {criterion.name!r}: needs must be one of {', '.join(NEEDS)}")
  if not criterion.deterministic and criterion.name != "random":
    raise CriterionError(f"criterion {criterion.name!r}: only 'random' is averaged over seeds; a registered "
                         f"criterion must be deterministic (draw from a fixed key inside its order)")
  old = REGISTRY.get(criterion.name)
  same = lambda c: dataclasses.replace(c, order=None)  # a cell run again declares a new function object
  if old is not None and same(old) != same(criterion):
    raise CriterionError(f"a criterion named {criterion.name!r} is already registered ({old.help}); choose "
                         f"another name, or criteria.unregister({criterion.name!r}) first")
  REGISTRY[criterion.name] = criterion
  return criterion


def unregister(name: str) -> None:
  """Removes a criterion (tests register and remove their own)."""
  REGISTRY.pop(name, None)


def names(*, deterministic: bool | None = None, panel: str | None = None) -> tuple[str, ...]:
  """Registered criteria, in registration order, optionally only the (non-)deterministic ones or one panel's."""
  return tuple(c.name for c in REGISTRY.values()
               if (deterministic is None or c.deterministic == deterministic) and (panel is None or c.panel == panel))


def get(name: str) -> Criterion:
  """The registered criterion `name`; an error listing the valid ones otherwise."""
  if name not in REGISTRY:
    raise CriterionError(f"unknown criterion {name!r}; valid criteria: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def help_text(name: str) -> str:
  """A criterion's one-line help ("" for an unregistered name: figures of old results still draw)."""
  return REGISTRY[name].help if name in REGISTRY else ""


def panel_of(name: str) -> str:
  """A criterion's Figure 2 panel (an unregistered name, e.g. from an old results file: the field's)."""
  return REGISTRY[name].panel if name in REGISTRY else FIELD


def style_of(name: str) -> tuple[str, str]:
  """A criterion's matplotlib colour and line style (an unregistered name: black, solid)."""
  return REGISTRY[name].style if name in REGISTRY else ("black", "-")


def check(chosen, info: topology.LayerInfo | None = None) -> list[Criterion]:
  """The criteria named in `chosen`; an error naming the valid ones for an unknown name, or the reason
  when one cannot be computed on the layer `info`."""
  out = [get(name) for name in chosen]
  if info is not None:
    for c in out:
      if c.unavailable(info):
        raise CriterionError(f"criterion {c.name!r} is not offered on {info.name}: {c.unavailable(info)}; "
                             f"leave it out of --criteria")
  return out


def offered(chosen, info: topology.LayerInfo) -> tuple[list[str], dict[str, str]]:
  """(the criteria of `chosen` computable on the layer, {left out: reason})."""
  reasons = {name: get(name).unavailable(info) for name in chosen}
  return [n for n in chosen if not reasons[n]], {n: r for n, r in reasons.items() if r}


# ----------------------------------------------------------------------------- what criteria read


class Evidence:
  """What criteria read about one layer, each computed once on first use: `W` (m, n) its units' weight
  vectors in float64, `bias`, `bn_scale` (the following BatchNorm's scale), and `statistics` (the
  data-aware statistics of `data_statistics` on `data`, training images and labels)."""

  def __init__(self, net: Network, variables: Mapping, layer: str, data=None, *, chunk: int = DATA_CHUNK):
    self.net, self.variables, self.layer, self.data, self.chunk = net, variables, layer, data, chunk
    self.info = topology.check(net, layer) if net is not None else None

  @classmethod
  def of_weights(cls, W) -> "Evidence":
    """Evidence of a unit matrix alone (m, n): enough for the weight-based and random criteria."""
    ev = cls(None, None, "the unit matrix")
    ev.__dict__["W"] = np.asarray(W, np.float64)
    return ev

  def _network(self, what: str) -> None:
    if self.net is None:
      raise CriterionError(f"{what} needs the network and its variables, not a unit matrix alone: "
                           f"criteria.Evidence(net, variables, layer, data=(x, y))")

  @functools.cached_property
  def W(self) -> np.ndarray:
    return np.asarray(unit_matrix(self.variables, self.layer), np.float64)

  @functools.cached_property
  def bias(self) -> np.ndarray:
    self._network("the bias")
    group = topology.get(self.variables["params"], self.layer.split("/"))
    return np.asarray(group.get("bias", np.zeros(self.W.shape[0])), np.float64)

  @functools.cached_property
  def bn_scale(self) -> np.ndarray:
    self._network("the BatchNorm scale")
    if self.info.norm is None:
      raise CriterionError(f"no BatchNorm follows {self.layer}")
    norm = topology.get(self.variables["params"], self.info.norm.split("/"))
    return np.asarray(norm["scale"], np.float64)

  @functools.cached_property
  def statistics(self) -> dict[str, np.ndarray]:
    self._network("a data-aware criterion")
    if self.data is None:
      raise CriterionError(f"data-aware criteria on {self.layer} need training images: pass data=(x, y)")
    x, y = self.data
    return data_statistics(self.net, self.variables, self.layer, x, y, chunk=self.chunk)


def data_statistics(net: Network, variables: Mapping, layer: str, x, y, *, chunk: int = DATA_CHUNK) -> dict:
  """Per unit of `layer`, over the images `x` with labels `y`, in one compiled pass (a scan over chunks):

  - "taylor": mean over images of |dL_i/ds_j| / M, where s_j scales unit j's output (after its bias and
    the BatchNorm that follows, where removal zeroes it) and M is its number of positions: the
    first-order estimate of the change of image i's cross-entropy L_i when the unit is removed (for a
    ReLU after it, Molchanov et al. 2017's |mean over positions of activation x gradient|);
  - "mean_activation": the mean of the activation (`topology.activations`: after the nonlinearity) over
    images and positions;
  - "apoz": the fraction of those activations <= 0 (Hu et al. 2016's average percentage of zeros, for
    a ReLU).
  Returned as float64 arrays of shape (m,).
  """
  info = topology.check(net, layer)
  leaves = jax.tree.leaves(dict(variables))
  xs, ys = variants.pad_chunks(np.asarray(x, np.float32), np.asarray(y), chunk)
  graph, activation = topology.activation_graph(net, variables, xs[0, :1], layer)
  sums = _statistics(graph, activation, info.units, leaves, xs, ys)
  n = len(y)
  return {k: np.asarray(v, np.float64) / n for k, v in sums.items()}


@functools.partial(jax.jit, static_argnames=("graph", "activation", "units"))
def _statistics(graph, activation, units, leaves, xs, ys):
  def per_image(scale, x, y):
    act, logits = graph.values([*leaves, x[None], scale], [activation, graph.outvars[0]])
    loss, _ = variants.loss_and_correct(logits, y[None])  # a batch of one; a padding row (label -1) adds 0
    return loss, act[0]

  gradient = jax.vmap(jax.grad(per_image, has_aux=True), in_axes=(None, 0, 0))

  def body(totals, chunk):
    x, y = chunk
    g, act = gradient(jnp.ones((units,), jnp.float32), x, y)  # (c, units), (c, ..., units)
    real = (y >= 0).astype(jnp.float32)[:, None]
    act = act.reshape(act.shape[0], -1, units)
    positions = act.shape[1]
    step = {"taylor": jnp.abs(g) / positions, "mean_activation": act.mean(1), "apoz": (act <= 0).mean(1)}
    return {k: totals[k] + jnp.sum(v * real, 0) for k, v in step.items()}, None

  zero = jnp.zeros((units,), jnp.float32)
  totals, _ = jax.lax.scan(body, {"taylor": zero, "mean_activation": zero, "apoz": zero}, (xs, ys))
  return totals


# ----------------------------------------------------------------------------- orders


def by_score(score: Callable[[Evidence], np.ndarray], keep: str = "largest"):
  """An `order` from a per-unit score: keeping the largest removes the lowest score first (ties to the
  lower index); keeping the smallest, the highest first."""
  if keep not in ("largest", "smallest"):
    raise CriterionError(f"keep must be 'largest' or 'smallest', not {keep!r}")

  def order(ev: Evidence, key=None) -> np.ndarray:
    s = np.asarray(score(ev), np.float64)
    return np.argsort(s if keep == "largest" else -s, kind="stable").astype(np.int32)

  return order


def frame_potential_gram(W) -> np.ndarray:
  """G_ij = <u_i, u_j>^2 for the normalised rows u_i (u_i = 0 for a zero row), in float64; exactly
  symmetric, with G_ii = 1 for a non-zero row."""
  G = np.square(cosine_similarity(W))
  G = (G + G.T) / 2
  G[np.diag_indices(len(G))] = (unit_norms(W) > 0).astype(np.float64)
  return G


def _first_best(scores: np.ndarray, alive: np.ndarray) -> int:
  """The lowest alive index whose score is within the tie window of the smallest alive score."""
  best = scores[alive].min()
  window = TIE_ULPS * len(scores) * np.finfo(np.float64).eps * max(np.abs(scores[alive]).max(), 1.0)
  return int(np.flatnonzero(alive & (scores <= best + window))[0])


def greedy_fp_order(W, remove_largest: bool) -> np.ndarray:
  """Greedy frame-potential removal in float64: each step re-sums every alive unit's contribution
  c_i = sum_{j alive} G_ij and removes the smallest (max_fp) or largest (min_fp); ties go to the
  lower index."""
  G = frame_potential_gram(W)
  m = len(G)
  sign = -1.0 if remove_largest else 1.0
  alive = np.ones(m, bool)
  order = np.empty(m, np.int32)
  for i in range(m):
    r = _first_best(sign * (G @ alive.astype(np.float64)), alive)
    order[i], alive[r] = r, False
  return order


def random_order(ev: Evidence, key=None) -> np.ndarray:
  if key is None:
    raise CriterionError("criterion 'random' needs a key")
  return np.asarray(jax.random.permutation(key, ev.W.shape[0]), np.int32)


def register_pair(stem: str, what: str, score, needs: str, color: str, *, panel: str = FIELD, source: str = "") -> None:
  """max_<stem> (keeps the largest `what`) and min_<stem> (keeps the smallest), in one colour."""
  register(Criterion(f"max_{stem}", f"keeps the units with the largest {what} (removes the smallest first)", needs,
                     by_score(score, "largest"), style=(color, "-"), panel=panel, source=source))
  register(Criterion(f"min_{stem}", f"keeps the units with the smallest {what} (removes the largest first)", needs,
                     by_score(score, "smallest"), style=(color, "--"), panel=panel, source=source))


# The report's five (section 2), in its order: their names, help and orders are those of the report's Figure 2.
_squared_norms = lambda ev: np.sum(np.square(ev.W), 1)  # exact products of float32 weights
register(Criterion("max_mag", "keeps the largest-norm units (removes the smallest ||w_i|| first)", WEIGHTS,
                   by_score(_squared_norms, "largest"), style=("tab:blue", "-"), panel=REPORT, source="the report"))
register(Criterion("min_mag", "keeps the smallest-norm units (removes the largest ||w_i|| first)", WEIGHTS,
                   by_score(_squared_norms, "smallest"), style=("tab:blue", "--"), panel=REPORT, source="the report"))
register(Criterion("max_fp", "greedily keeps the remaining frame potential maximal (removes the unit least aligned "
                   "with the rest first)", WEIGHTS, lambda ev, key=None: greedy_fp_order(ev.W, remove_largest=False),
                   style=("tab:red", "-"), panel=REPORT, source="the report"))
register(Criterion("min_fp", "greedily keeps the remaining frame potential minimal (removes the unit most aligned "
                   "with the rest first)", WEIGHTS, lambda ev, key=None: greedy_fp_order(ev.W, remove_largest=True),
                   style=("tab:red", "--"), panel=REPORT, source="the report"))
register(Criterion("random", "a uniformly random order (mean +- std over seeds)", RANDOM, random_order,
                   deterministic=False, style=("tab:gray", "-"), panel=REPORT, source="the report"))
# The field's: L1 filter norms, first-order Taylor, mean activation, APoZ, BatchNorm scale.
register_pair("l1", "L1 norm sum_k abs(w_ik)", lambda ev: np.sum(np.abs(ev.W), 1), WEIGHTS, "tab:purple",
              source="Li et al. 2017, Pruning filters for efficient ConvNets")
register_pair("taylor", "first-order Taylor importance, mean abs(a dL/da) on training images",
              lambda ev: ev.statistics["taylor"], GRADIENTS, "tab:green",
              source="Molchanov et al. 2017, Pruning convolutional neural networks for resource efficient inference")
register_pair("act", "mean activation on training images", lambda ev: ev.statistics["mean_activation"], ACTIVATIONS,
              "tab:orange", source="Molchanov et al. 2017 (the mean-activation baseline)")
register_pair("apoz", "share of zero activations (APoZ) on training images",
              lambda ev: ev.statistics["apoz"], ACTIVATIONS, "tab:brown",
              source="Hu et al. 2016, Network trimming")
register_pair("bn", "BatchNorm scale abs(gamma)", lambda ev: np.abs(ev.bn_scale), BATCHNORM, "tab:olive",
              source="Liu et al. 2017, Learning efficient convolutional networks through network slimming")

REPORT_CRITERIA = names(panel=REPORT)  # the report's five, its Figure 2
REPORT_DETERMINISTIC = names(panel=REPORT, deterministic=True)  # ... less random: one order each

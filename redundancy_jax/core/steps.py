"""The pure pieces of training: the state of K replicas, one step of every replica (`train_step`),
validation with the minimum-loss parameters kept on device (`track_best`), and an epoch's steps as one
`lax.scan` (`scan_steps`). `core/epochs.py` runs an epoch of them in the form that suits the backend;
`train.train` is the I/O around that.

`K = num_seeds` independently seeded replicas train side by side (the step is vmapped over them); on
the ("replicas", "data") mesh of every device of every process the replicas are sharded over "replicas"
and each batch over the rest (`parallel.py`). Every `eval_every` iterations the validation
loss is computed on device and each replica keeps the parameters at its minimum validation loss: that
is the report's "network at iteration j" (DEFINITIONS.md section 1).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from redundancy_jax import models
from redundancy_jax.core import class_subsets, data as data_lib, jaxprs, optim, parallel, variants
from redundancy_jax.core.config import TrainConfig
from redundancy_jax.core.errors import BadOption
from redundancy_jax.models import Network, conv, topology

# ----------------------------------------------------------------------------- state and setup


@flax.struct.dataclass
class TrainState:
  """Every replica's training state, stacked on a leading axis K, plus the shared counters."""

  params: Any
  batch_stats: Any
  opt_state: Any
  best_params: Any  # at each replica's minimum validation loss so far
  best_batch_stats: Any
  best_loss: jax.Array  # (K,)
  best_step: jax.Array  # (K,)
  step: jax.Array
  epoch: jax.Array
  bad_step: jax.Array  # first iteration with a non-finite loss, -1 while there is none


class Setup(NamedTuple):
  """What the compiled step depends on besides its arguments (hashable: a static argument)."""

  cfg: TrainConfig
  model: Network
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  n_train: int  # examples per epoch: the training split, or the smallest replica's class subset of it
  label_maps: tuple | None = None  # class subsets: (K, classes) new labels, -1 left out (`data.class_subsets`)
  host_loop: bool = False  # the backend policy `variants.host_loop` (CPU and convolutions)
  classifier: str = ""  # class subsets: the classifier's name, whose absent outputs never move

  @property
  def steps_per_epoch(self) -> int:
    return self.n_train // self.cfg.batch_size

  @property
  def num_epochs(self) -> int:
    return math.ceil(self.cfg.steps / self.steps_per_epoch)


def make_setup(cfg: TrainConfig, dataset: data_lib.Dataset, *, masked: bool = False) -> Setup:
  """The model (standardising by the dataset's mean and std), optimizer (with `masked`, keeping the
  lottery masks of its state, `optim.keep_masked`) and mesh of a resolved config."""
  model = models.from_config(cfg, dataset)
  shapes = jax.eval_shape(lambda key: model.init(key, dataset.image_shape), jax.random.key(0))
  mesh = parallel.mesh(cfg.num_seeds, cfg.batch_size, num_devices=cfg.num_devices,
                       replica_devices=cfg.replica_devices)
  n_train, maps, classifier = len(dataset.train_y), None, ""
  if cfg.classes is not None:
    classifier = topology.classifier(model)
    maps_KxC = data_lib.class_subsets(cfg.seed, cfg.classes, dataset.num_classes)
    n_train = int(min(np.sum(row[dataset.train_y] >= 0) for row in maps_KxC))
    maps = tuple(map(tuple, maps_KxC.tolist()))
  if n_train < cfg.batch_size:
    raise BadOption(f"{n_train} training examples are fewer than one batch of {cfg.batch_size}")
  return Setup(cfg, model, optim.make_optimizer(cfg, masked=masked), mesh, n_train, maps, variants.host_loop(shapes),
               classifier)


def replica_keys(cfg: TrainConfig) -> jax.Array:
  """The K replicas' keys (each replica's initialisation, shuffles and step keys fold in from its own)."""
  return jax.random.split(jax.random.key(cfg.seed), cfg.num_seeds)


def place_state(state: TrainState, mesh) -> TrainState:
  """`state` on the mesh: every leaf with the leading replica axis sharded over "replicas" (each device
  holds its own seeds), the counters replicated."""
  return jax.tree.map(lambda a: parallel.put(a, mesh, P("replicas") if np.ndim(a) else P()), state)


def init_state(setup: Setup, image_shape: tuple[int, ...]) -> TrainState:
  """The K replicas' initial state, placed on the mesh (`place_state`)."""
  init = lambda k: setup.model.init(k, image_shape)
  variables = jax.vmap(init)(replica_keys(setup.cfg))
  if setup.cfg.classifier_seed is not None:  # Figure 5: the same network, another classifier
    path = topology.classifier(setup.model).split("/")
    other = jax.vmap(init)(jax.random.split(jax.random.key(setup.cfg.classifier_seed), setup.cfg.num_seeds))
    variables["params"] = topology.replace(variables["params"], path, topology.get(other["params"], path))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  k = setup.cfg.num_seeds
  state = TrainState(
    params=params,
    batch_stats=batch_stats,
    opt_state=jax.vmap(setup.tx.init)(params),
    best_params=jax.tree.map(jnp.copy, params),  # own buffers: the step donates its state
    best_batch_stats=jax.tree.map(jnp.copy, batch_stats),
    best_loss=jnp.full((k,), jnp.inf, jnp.float32),
    best_step=jnp.zeros((k,), jnp.int32),
    step=jnp.zeros((), jnp.int32),
    epoch=jnp.zeros((), jnp.int32),
    bad_step=jnp.full((), -1, jnp.int32),
  )
  return place_state(state, setup.mesh)


# ----------------------------------------------------------------------------- pure pieces

def forward(net: Network, params, batch_stats, x, train: bool, rng=None):
  """Logits and updated batch statistics (unchanged when not training or without BatchNorm); `rng` seeds a
  training step's dropout."""
  variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
  if train:
    return net.apply_train(variables, x, rng=rng)
  return net.apply(variables, x), batch_stats


def over_replicas(setup: Setup, fn, *args):
  """`jax.vmap(fn)(*args)` over the leading replica axis; under the host-loop policy (XLA:CPU with
  convolutions, `variants.host_loop`) unrolled at trace time instead, because a vmapped convolution
  becomes a grouped one there, measured 7x slower per replica (BUILD_NOTES.md)."""
  if not setup.host_loop or setup.mesh.shape["replicas"] > 1:  # sharded replicas: vmapped
    return jax.vmap(fn)(*args)
  outs = [fn(*jax.tree.map(lambda a: a[r], args)) for r in range(setup.cfg.num_seeds)]
  return jax.tree.map(lambda *a: jnp.stack(a), *outs)


def _replica_step(setup: Setup, params, batch_stats, opt_state, x, y, key, num_classes=None):
  """One optimisation step of one replica on raw images `x` (the model standardises them); with
  `num_classes`, the outputs from that one on masked (`class_subsets.mask_logits`)."""
  if setup.cfg.augment:
    x = data_lib.augment_batch(x, key)

  def loss_fn(p):
    logits, new_stats = forward(setup.model, p, batch_stats, x, train=True, rng=jax.random.fold_in(key, 1))
    if num_classes is not None:
      logits = class_subsets.mask_logits(logits, num_classes)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (new_stats, jnp.mean(jnp.argmax(logits, -1) == y))

  (loss, (batch_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = setup.tx.update(grads, opt_state, params)
  if num_classes is not None:
    updates = class_subsets.keep_absent_classes(setup.classifier, updates, num_classes)
  return optax.apply_updates(params, updates), batch_stats, opt_state, loss, acc


def train_step(setup: Setup, state: TrainState, idx_KxB: jax.Array, train_data,
               keys_K=None) -> tuple[TrainState, tuple]:
  """One step of every replica on its batch `idx_KxB` of the training split `train_data` = (images,
  labels): (state, (loss_K, acc_K)). `keys_K`: the replicas' keys (default the config's, `_replica_keys`;
  a wave's, `epochs.wave_epoch`)."""
  train_x, train_y = train_data
  x = parallel.shard_batch(train_x[idx_KxB], setup.mesh, axis=1, replica_axis=0)
  keys_K = replica_keys(setup.cfg) if keys_K is None else keys_K
  keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 2), state.step))(keys_K)
  y, subsets = train_y[idx_KxB], ()
  if setup.label_maps is not None:  # each replica's own labels
    y = jnp.take_along_axis(jnp.asarray(setup.label_maps, jnp.int32), y, axis=1)
    subsets = (class_subsets.class_counts(setup),)
  params, stats, opt, loss, acc = over_replicas(
    setup, functools.partial(_replica_step, setup), state.params, state.batch_stats, state.opt_state, x, y, keys,
    *subsets,
  )
  return state.replace(params=params, batch_stats=stats, opt_state=opt, step=state.step + 1), (loss, acc)


def note_non_finite(state: TrainState, first_step, metrics: dict) -> TrainState:
  """`state.bad_step` set to the first iteration of the epoch that began at `first_step` with a
  non-finite loss in any replica (unless one was noted before). Once per epoch, from its metrics: a check
  per step would reduce over the replicas' devices at every step (one collective per step, which halved
  the steps/s of a two-process run)."""
  ok_S = jnp.all(jnp.isfinite(metrics["loss"]) | ~metrics["active"][:, None], axis=1)
  bad = (state.bad_step < 0) & ~jnp.all(ok_S)
  return state.replace(bad_step=jnp.where(bad, first_step + 1 + jnp.argmin(ok_S), state.bad_step))


def track_best(state: TrainState, val_loss_K: jax.Array) -> TrainState:
  """Keeps, per replica, the parameters at the minimum validation loss."""
  better = val_loss_K < state.best_loss
  pick = lambda new, old: jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
  return state.replace(
    best_loss=jnp.where(better, val_loss_K, state.best_loss),
    best_step=jnp.where(better, state.step, state.best_step),
    best_params=jax.tree.map(pick, state.params, state.best_params),
    best_batch_stats=jax.tree.map(pick, state.batch_stats, state.best_batch_stats),
  )


def eval_sums(setup: Setup, params, batch_stats, x, y) -> tuple[jax.Array, jax.Array]:
  """(loss sum, correct count) of every replica on one padded chunk (labels -1 are padding)."""
  x = parallel.shard_batch(x, setup.mesh)
  logits = lambda p, b: forward(setup.model, p, b, x, train=False)[0]
  if setup.label_maps is None:
    return over_replicas(setup, lambda p, b: variants.loss_and_correct(logits(p, b), y), params, batch_stats)
  sums = lambda p, b, y_k, c: variants.loss_and_correct(class_subsets.mask_logits(logits(p, b), c), y_k)
  labels = class_subsets.shared_labels(setup, y)
  return over_replicas(setup, sums, params, batch_stats, labels, class_subsets.class_counts(setup))


def _scanned_eval(setup: Setup, params, batch_stats, split) -> tuple[jax.Array, jax.Array]:
  body = lambda totals, chunk: (jax.tree.map(jnp.add, totals, eval_sums(setup, params, batch_stats, *chunk)), None)
  zeros = (jnp.zeros(setup.cfg.num_seeds, jnp.float32), jnp.zeros(setup.cfg.num_seeds, jnp.int32))
  return jax.lax.scan(body, zeros, split)[0]


def is_due(cfg: TrainConfig, step) -> jax.Array:
  """Whether iteration `step` (counted after the update) ends with a validation."""
  return (step % cfg.eval_every == 0) | (step == cfg.steps)


def epoch_indices(setup: Setup, epoch, train_y: jax.Array | None = None, keys_K=None) -> jax.Array:
  """(steps_per_epoch, K, batch) example indices: each replica's own shuffle of this epoch (`keys_K` as
  `train_step`'s). With class subsets (which need the training labels `train_y`), a shuffle of the
  replica's own examples, of which an epoch takes the first steps_per_epoch * batch (the smallest
  subset's whole size)."""
  n, b, s = setup.n_train, setup.cfg.batch_size, setup.steps_per_epoch
  epoch_key = lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), epoch)
  if setup.label_maps is None:
    order = lambda k: jax.random.permutation(epoch_key(k), n)
    idx_KxSxB = jax.vmap(order)(replica_keys(setup.cfg) if keys_K is None else keys_K)[:, : s * b]
  else:  # the replica's examples first, in random order
    keep_KxN = class_subsets.shared_labels(setup, train_y) >= 0
    order = lambda k, keep: jnp.argsort(jnp.where(keep, jax.random.uniform(epoch_key(k), keep.shape), 2.0))
    idx_KxSxB = jax.vmap(order)(replica_keys(setup.cfg), keep_KxN)[:, : s * b]
  return idx_KxSxB.reshape(setup.cfg.num_seeds, s, b).transpose(1, 0, 2)


def scan_steps(setup: Setup, state: TrainState, train_data, val_split, keys_K=None) -> tuple[TrainState, dict]:
  """The steps of one pass over the training split for every replica as one scan: `train_step`, then
  (when due) validation and `track_best`; per-step metrics. `keys_K` as `train_step`'s."""
  cfg, nan_K = setup.cfg, jnp.full(setup.cfg.num_seeds, jnp.nan, jnp.float32)
  n_val = class_subsets.num_examples(setup, val_split[1])

  def validate(s):
    val_loss = _scanned_eval(setup, s.params, s.batch_stats, val_split)[0] / n_val
    return track_best(s, val_loss), val_loss

  def body(state, idx_KxB):
    active = state.step < cfg.steps
    skip = lambda s: (s, (nan_K, nan_K))  # steps past cfg.steps: NaN metrics, as in `epochs.host_epoch`
    step = lambda s: train_step(setup, s, idx_KxB, train_data, keys_K)
    state, (loss, acc) = jax.lax.cond(active, step, skip, state)
    state, val_loss = jax.lax.cond(active & is_due(cfg, state.step), validate, lambda s: (s, nan_K), state)
    return state, {"active": active, "loss": loss, "accuracy": acc, "val_loss": val_loss}

  return jax.lax.scan(body, state, epoch_indices(setup, state.epoch, train_data[1], keys_K))


_eval_sums_jit = jax.jit(eval_sums, static_argnames="setup")
_scanned_eval_jit = jax.jit(_scanned_eval, static_argnames="setup")


def evaluate(setup: Setup, params, batch_stats, split) -> tuple[jax.Array, jax.Array]:
  """(loss_K, accuracy_K) on a split padded by `variants.pad_chunks`: one compiled scan, or (backend
  policy `variants.host_loop`) a loop of compiled chunks."""
  if setup.host_loop:
    sums = [parallel.one_at_a_time(_eval_sums_jit(setup, params, batch_stats, x, y), setup.mesh) for x, y in zip(*split)]
    loss, correct = sum(s[0] for s in sums), sum(s[1] for s in sums)
  else:
    loss, correct = _scanned_eval_jit(setup, params, batch_stats, split)
  n = class_subsets.num_examples(setup, split[1])
  return loss / n, correct / n


@functools.lru_cache(maxsize=None)
def _step_primitives(setup: Setup, choice: str) -> frozenset[str]:
  del choice  # the cache key: the convolutions `models.conv` traces
  net, cfg = setup.model, setup.cfg
  variables = jax.eval_shape(lambda k: net.init(k, net.image_shape), jax.random.key(0))
  params = variables["params"]
  x = jax.ShapeDtypeStruct((cfg.batch_size, *net.image_shape), jnp.float32)
  y = jax.ShapeDtypeStruct((cfg.batch_size,), jnp.int32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  closed = jax.make_jaxpr(functools.partial(_replica_step, setup))(
    params, variables.get("batch_stats", {}), jax.eval_shape(setup.tx.init, params), x, y, key)
  return frozenset(jaxprs.primitives(closed))


def xla_convolutions_in_step(setup: Setup) -> bool:
  """Whether one replica's training step, differentiated, runs an XLA convolution (traced abstractly
  once per setup and convolution choice, `models.conv.conv_choice`)."""
  return "conv_general_dilated" in _step_primitives(setup, conv.conv_choice())


def device_data(setup: Setup, dataset: data_lib.Dataset, eval_chunk: int = 500):
  """(train (x, y), validation split, test split) placed on every device of the mesh."""
  put = lambda tree: parallel.replicate(tree, setup.mesh)
  split = lambda x, y: put(variants.pad_chunks(x, y, eval_chunk, multiple=setup.mesh.shape["data"]))
  train = put((dataset.train_x, dataset.train_y))
  return train, split(dataset.val_x, dataset.val_y), split(dataset.test_x, dataset.test_y)


def best_variables(state: TrainState) -> dict:
  """{"params", "batch_stats"?} at minimum validation loss, stacked over replicas."""
  variables = {"params": state.best_params}
  if jax.tree.leaves(state.best_batch_stats):
    variables["batch_stats"] = state.best_batch_stats
  return parallel.fetch(variables)

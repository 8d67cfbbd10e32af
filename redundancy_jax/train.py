"""Training: the report's recipes, one jitted pure step, one compiled `lax.scan` per epoch (on CPU,
models with convolutions step from Python instead: XLA:CPU convolutions are ~13x slower in loops).

`K = num_seeds` independently seeded replicas train side by side (the step is vmapped over them); the
batch is sharded over every local device (`parallel.py`). Every `eval_every` iterations the validation
loss is computed on device and each replica keeps the parameters at its minimum validation loss: that
is the report's "network at iteration j". Host work happens once per epoch: progress, metrics,
a parameter snapshot, and (at most every `checkpoint_every_secs`) an orbax checkpoint to resume from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from redundancy_jax import checkpoint, data as data_lib, parallel, storage
from redundancy_jax.models import DEFAULT_DATASET, MODELS, create_model, init_variables

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One row of SPEC section 1's training table."""

  steps: int
  batch_size: int
  optimizer: str
  learning_rate: float
  lr_drops: tuple[float, ...] = ()  # fractions of `steps` where the learning rate is divided by 10
  weight_decay: float = 0.0
  augment: bool = False


RECIPES = {
  "lenet": Recipe(50_000, 64, "momentum", 3e-3),
  "conv2": Recipe(20_000, 64, "adam", 2e-4),
  "conv4": Recipe(25_000, 60, "adam", 3e-4),
  "conv6": Recipe(40_000, 60, "adam", 3e-4),
  "vgg19": Recipe(112_000, 64, "momentum", 0.1, lr_drops=(0.5, 0.75), weight_decay=1e-4, augment=True),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a run depends on; `None` fields take the model's recipe (see `resolve`)."""

  model: str = "lenet"
  dataset: str | None = None
  data_dir: str | None = None
  data_source: str = "auto"
  steps: int | None = None
  batch_size: int | None = None
  optimizer: str | None = None
  learning_rate: float | None = None
  lr_drops: tuple[float, ...] | None = None
  weight_decay: float | None = None
  augment: bool | None = None
  width: float = 1.0
  batch_norm: bool | None = None
  eval_every: int = 100
  val_size: int = 5000
  seed: int = 0
  num_seeds: int = 1
  num_devices: int | None = None
  snapshot_every: int = 0  # epochs between parameter snapshots; 0: every epoch, at most ~100 in all

  def resolve(self) -> "TrainConfig":
    """Fills every `None` from the model's recipe and checks the names."""
    if self.model not in MODELS:
      raise ValueError(f"unknown model {self.model!r}; valid models: {', '.join(MODELS)}")
    recipe = RECIPES[self.model]
    filled = {
      f.name: getattr(recipe, f.name)
      for f in dataclasses.fields(Recipe)
      if getattr(self, f.name) is None
    }
    if self.dataset is None:
      filled["dataset"] = DEFAULT_DATASET[self.model]
    if self.batch_norm is None:
      filled["batch_norm"] = self.model == "vgg19"
    cfg = dataclasses.replace(self, **filled)
    if cfg.optimizer not in OPTIMIZERS:
      raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    if cfg.dataset not in data_lib.DATASETS:
      raise ValueError(f"unknown dataset {cfg.dataset!r}; valid datasets: {', '.join(data_lib.DATASETS)}")
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.eval_every <= 0 or cfg.num_seeds <= 0:
      raise ValueError("steps, batch_size, eval_every and num_seeds must be positive")
    return cfg

  @classmethod
  def from_json(cls, obj: dict) -> "TrainConfig":
    """The config `to_json` wrote (e.g. a run's config.json)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in obj.items()})

  def to_json(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def model_options(cfg: TrainConfig) -> dict:
  """The `create_model` options of a resolved config."""
  options: dict[str, Any] = {"width": cfg.width}
  if cfg.model != "lenet":
    options["batch_norm"] = cfg.batch_norm
  return options


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """The recipe's optimizer: SGD, SGD with momentum 0.9, or Adam; step drops; L2 weight decay."""
  schedule = optax.piecewise_constant_schedule(
    cfg.learning_rate, {int(cfg.steps * f): 0.1 for f in cfg.lr_drops}
  )
  if cfg.optimizer == "adam":
    tx = optax.adam(schedule)
  else:
    tx = optax.sgd(schedule, momentum=0.9 if cfg.optimizer == "momentum" else None)
  if cfg.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
  return tx


# ----------------------------------------------------------------------------- pure pieces


def forward(model, params, batch_stats, x, train: bool):
  """Logits and updated batch statistics (unchanged when not training or without BatchNorm)."""
  variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
  if train and batch_stats:
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]
  return model.apply(variables, x, train=train), batch_stats


def augment_batch(x_BxHxWxC: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
  """Random crop after zero-padding by `pad`, and a random horizontal flip, per image."""
  b, h, w, _ = x_BxHxWxC.shape
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  x = jax.vmap(crop)(padded, offsets)
  flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, x[:, :, ::-1], x)


def prepare_eval(x: np.ndarray, y: np.ndarray, chunk: int):
  """Pads a split to whole chunks: (x, y, weight) shaped (chunks, chunk, ...)."""
  n = len(y)
  chunks = max(1, math.ceil(n / chunk))
  pad = chunks * chunk - n
  weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  y = np.concatenate([y, np.zeros(pad, y.dtype)])
  return x.reshape(chunks, chunk, *x.shape[1:]), y.reshape(chunks, chunk), weight.reshape(chunks, chunk)


def chunk_sums(logits: jax.Array, y: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Weighted sums of the loss and of correct predictions over one chunk (padding has weight 0)."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
  return jnp.sum(loss * w), jnp.sum(correct * w)


def _select(take_K: jax.Array, new, old):
  """Per replica: `new` where `take_K`, else `old` (leading axis K on every leaf)."""
  pick = lambda a, b: jnp.where(take_K.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


# ----------------------------------------------------------------------------- the trainer


class Trainer:
  """Holds the compiled epoch for one resolved config and one dataset; the state stays a pytree."""

  def __init__(self, cfg: TrainConfig, dataset: data_lib.Dataset, eval_chunk: int = 500, loop: str = "auto"):
    if loop not in ("auto", "scan", "python"):
      raise ValueError(f"unknown loop {loop!r}; valid: auto, scan, python")
    self.cfg, self.dataset = cfg, dataset
    self.model = create_model(cfg.model, num_classes=dataset.num_classes, **model_options(cfg))
    self.tx = make_optimizer(cfg)
    self.mesh = parallel.data_mesh(cfg.num_devices)
    if cfg.batch_size % self.mesh.size:
      raise ValueError(f"batch size {cfg.batch_size} is not divisible by {self.mesh.size} devices")
    n_train = len(dataset.train_y)
    if n_train < cfg.batch_size:
      raise ValueError(f"{n_train} training examples are fewer than one batch of {cfg.batch_size}")
    self.steps_per_epoch = n_train // cfg.batch_size
    self.num_epochs = math.ceil(cfg.steps / self.steps_per_epoch)
    self.snapshot_every = cfg.snapshot_every or math.ceil(self.num_epochs / 100)
    self.replica_keys = jax.random.split(jax.random.key(cfg.seed), cfg.num_seeds)
    chunk = min(eval_chunk, max(len(dataset.val_y), 1))
    chunk = max(self.mesh.size, chunk - chunk % self.mesh.size)
    put = lambda tree: parallel.replicate(jax.tree.map(jnp.asarray, tree), self.mesh)
    self.train_data = put((dataset.train_x, dataset.train_y))
    self.val_data = put(prepare_eval(dataset.val_x, dataset.val_y, chunk))
    self.test_data = put(prepare_eval(dataset.test_x, dataset.test_y, chunk))
    self._epoch = jax.jit(self._run_epoch, donate_argnums=0)
    # XLA:CPU runs convolutions inside loop bodies (scan/while) about 13x slower than outside them
    # (jax-ml/jax#12868, measured in BUILD_NOTES.md), so on CPU conv models step from Python instead.
    has_conv = any(layer.kind == "conv" for layer in self.model.plan)
    self.python_loop = jax.default_backend() == "cpu" and has_conv if loop == "auto" else loop == "python"
    self._step_jit = jax.jit(self._step, donate_argnums=0)
    self._track_jit = jax.jit(self._track_best, donate_argnums=0)
    self._indices = jax.jit(self._epoch_indices)
    self._evaluate_jit = jax.jit(self._evaluate_replicas)
    self._chunk_sums_jit = jax.jit(self._chunk_sums)

  # -- state

  def init_state(self) -> dict:
    """Stacked initial state of the K replicas plus the shared counters."""
    variables = jax.vmap(lambda k: init_variables(self.model, k, self.dataset.image_shape))(self.replica_keys)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    state = {
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": jax.vmap(self.tx.init)(params),
      "best_params": jax.tree.map(jnp.copy, params),  # own buffers: the epoch donates its state
      "best_batch_stats": jax.tree.map(jnp.copy, batch_stats),
      "best_loss": jnp.full((self.cfg.num_seeds,), jnp.inf, jnp.float32),
      "best_step": jnp.zeros((self.cfg.num_seeds,), jnp.int32),
      "step": jnp.zeros((), jnp.int32),
      "epoch": jnp.zeros((), jnp.int32),
      "bad_step": jnp.full((), -1, jnp.int32),
    }
    return parallel.replicate(state, self.mesh)

  # -- compiled pieces

  def _normalize(self, x):
    return data_lib.normalize(x, self.dataset.mean, self.dataset.std)

  def _apply(self, params, batch_stats):
    return lambda x: forward(self.model, params, batch_stats, self._normalize(x), train=False)[0]

  def _chunk_sums(self, params, batch_stats, x, y, w):
    """(loss sum, correct sum) of every replica on one chunk of a prepared split."""
    x = parallel.shard_batch(x, self.mesh)
    return jax.vmap(lambda p, b: chunk_sums(self._apply(p, b)(x), y, w))(params, batch_stats)

  def _evaluate_replicas(self, params, batch_stats, split):
    """(loss_K, accuracy_K) of every replica on a prepared split, chunks scanned on device."""
    body = lambda _, chunk: (None, self._chunk_sums(params, batch_stats, *chunk))
    losses, corrects = jax.lax.scan(body, None, split)[1]
    total = jnp.sum(split[2])
    return jnp.sum(losses, 0) / total, jnp.sum(corrects, 0) / total

  def evaluate(self, params, batch_stats, split) -> tuple[jax.Array, jax.Array]:
    """(loss_K, accuracy_K) on a prepared split: one compiled scan, or a loop of compiled chunks."""
    if not self.python_loop:
      return self._evaluate_jit(params, batch_stats, split)
    sums = [self._chunk_sums_jit(params, batch_stats, *chunk) for chunk in zip(*split)]
    total = jnp.sum(split[2])
    return sum(s[0] for s in sums) / total, sum(s[1] for s in sums) / total

  def _train_step(self, params, batch_stats, opt_state, x_u8, y, key):
    x = self._normalize(x_u8)
    if self.cfg.augment:
      x = augment_batch(x, key)

    def loss_fn(p):
      logits, new_stats = forward(self.model, p, batch_stats, x, train=True)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, (new_stats, jnp.mean(jnp.argmax(logits, -1) == y))

    (loss, (batch_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss, acc

  def _epoch_indices(self, epoch) -> jax.Array:
    """(steps_per_epoch, K, batch) example indices: each replica's own shuffle of this epoch."""
    n, b = len(self.dataset.train_y), self.cfg.batch_size
    order = lambda k: jax.random.permutation(jax.random.fold_in(jax.random.fold_in(k, 1), epoch), n)
    idx_KxSxB = jax.vmap(order)(self.replica_keys)[:, : self.steps_per_epoch * b]
    return idx_KxSxB.reshape(self.cfg.num_seeds, self.steps_per_epoch, b).transpose(1, 0, 2)

  def _step(self, state, idx_KxB, train_data):
    """One optimisation step of every replica on its batch `idx_KxB`."""
    train_x, train_y = train_data
    x = parallel.shard_batch(train_x[idx_KxB], self.mesh, axis=1)
    y = train_y[idx_KxB]
    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 2), state["step"]))(self.replica_keys)
    params, stats, opt, loss, acc = jax.vmap(self._train_step)(
      state["params"], state["batch_stats"], state["opt_state"], x, y, keys
    )
    bad = (state["bad_step"] < 0) & ~jnp.all(jnp.isfinite(loss))
    new = dict(state, params=params, batch_stats=stats, opt_state=opt, step=state["step"] + 1)
    new["bad_step"] = jnp.where(bad, state["step"] + 1, state["bad_step"])
    return new, (loss, acc)

  def _validate(self, state, val_data):
    """Validation loss of every replica; keeps the parameters of each replica's minimum."""
    loss, _ = self._evaluate_replicas(state["params"], state["batch_stats"], val_data)
    return self._track_best(state, loss)

  def _track_best(self, state, loss):
    better = loss < state["best_loss"]
    new = dict(state, best_loss=jnp.where(better, loss, state["best_loss"]))
    new["best_step"] = jnp.where(better, state["step"], state["best_step"])
    new["best_params"] = _select(better, state["params"], state["best_params"])
    new["best_batch_stats"] = _select(better, state["batch_stats"], state["best_batch_stats"])
    return new, loss

  def _due(self, step):
    return (step % self.cfg.eval_every == 0) | (step == self.cfg.steps)

  def _run_epoch(self, state: dict, train_data, val_data) -> tuple[dict, dict]:
    """One pass over the training split for every replica, as one scan; returns per-step metrics."""
    cfg = self.cfg
    nan_K = jnp.full(cfg.num_seeds, jnp.nan, jnp.float32)

    def body(state, idx_KxB):
      active = state["step"] < cfg.steps
      skip = lambda s: (s, (jnp.zeros(cfg.num_seeds), jnp.zeros(cfg.num_seeds)))
      state, (loss, acc) = jax.lax.cond(active, lambda s: self._step(s, idx_KxB, train_data), skip, state)
      due = active & self._due(state["step"])
      state, val_loss = jax.lax.cond(due, lambda s: self._validate(s, val_data), lambda s: (s, nan_K), state)
      return state, {"active": active, "loss": loss, "accuracy": acc, "val_loss": val_loss}

    state, metrics = jax.lax.scan(body, state, self._epoch_indices(state["epoch"]))
    return dict(state, epoch=state["epoch"] + 1), metrics

  # -- host side

  def run_epoch(self, state):
    """Runs one epoch: a single compiled scan, or on CPU for conv models a loop of compiled steps."""
    if not self.python_loop:
      return self._epoch(state, self.train_data, self.val_data)
    nan_K = np.full(self.cfg.num_seeds, np.nan, np.float32)
    metrics = {"active": [], "loss": [], "accuracy": [], "val_loss": []}
    step = int(state["step"])
    for idx_KxB in self._indices(state["epoch"]):
      active = step < self.cfg.steps
      metrics["active"].append(active)
      if not active:
        for k in ("loss", "accuracy", "val_loss"):
          metrics[k].append(nan_K)
        continue
      state, (loss, acc) = self._step_jit(state, idx_KxB, self.train_data)
      step += 1
      val = nan_K
      if self._due(step):
        val = self.evaluate(state["params"], state["batch_stats"], self.val_data)[0]
        state, val = self._track_jit(state, val)
      metrics["loss"].append(loss), metrics["accuracy"].append(acc), metrics["val_loss"].append(val)
    metrics = {k: jnp.stack([jnp.asarray(v) for v in vs]) for k, vs in metrics.items()}
    return dict(state, epoch=state["epoch"] + 1), metrics

  def test_metrics(self, state) -> tuple[np.ndarray, np.ndarray]:
    """(loss_K, accuracy_K) of the minimum-validation-loss parameters on the test split."""
    loss, acc = self.evaluate(state["best_params"], state["best_batch_stats"], self.test_data)
    return np.asarray(loss), np.asarray(acc)


def best_variables(state) -> dict:
  """{"params", "batch_stats"?} at minimum validation loss, stacked over replicas."""
  variables = {"params": state["best_params"]}
  if jax.tree.leaves(state["best_batch_stats"]):
    variables["batch_stats"] = state["best_batch_stats"]
  return jax.device_get(variables)


# ----------------------------------------------------------------------------- a whole run


class ConfigMismatch(ValueError):
  pass


def _check_config(workdir: str, cfg: TrainConfig) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    storage.write_json(path, cfg.to_json())
    return
  old, new = storage.read_json(path), cfg.to_json()
  diffs = [f"  {k}: workdir has {old.get(k)!r}, this run asks {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
  if diffs:
    raise ConfigMismatch(
      f"{workdir} holds a run with another config; use a new --workdir or the same flags:\n" + "\n".join(diffs)
    )


def _trim_metrics(path: str, last_epoch: int) -> None:
  """After resuming from `last_epoch`, drops metric lines of epochs that are being redone."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [l for l in f if l.strip() and json.loads(l).get("epoch", 0) <= last_epoch]
  storage.atomic_write(path, lambda f: f.write("".join(lines).encode()))


def train(
  cfg: TrainConfig,
  workdir: str,
  *,
  dataset: data_lib.Dataset | None = None,
  checkpoint_every_secs: float = 60.0,
  max_epochs: int | None = None,
  log: Callable[[str], None] = print,
) -> dict:
  """Trains (or resumes) `cfg` in `workdir`; returns the results dict also written to results.json.

  `max_epochs` stops after that many epochs in this call (a later call resumes): for time-sliced jobs.
  """
  cfg = cfg.resolve()
  os.makedirs(workdir, exist_ok=True)
  _check_config(workdir, cfg)
  results_path = os.path.join(workdir, "results.json")
  if checkpoint.has_trained(workdir):
    log(f"{workdir} already holds a trained model; delete results.json to retrain")
    return storage.read_json(results_path)
  if dataset is None:
    dataset = data_lib.load_dataset(
      cfg.dataset, data_dir=cfg.data_dir, source=cfg.data_source, seed=cfg.seed, val_size=cfg.val_size
    )
  trainer = Trainer(cfg, dataset)
  state = trainer.init_state()
  mngr = checkpoint.manager(workdir)
  restored = checkpoint.restore_state(mngr, state)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if restored is not None:
    state = parallel.replicate(restored, trainer.mesh)
    _trim_metrics(metrics_path, int(state["epoch"]))
    log(f"resumed from checkpoint at step {int(state['step'])} (epoch {int(state['epoch'])})")
  else:
    _trim_metrics(metrics_path, 0)
    storage.save_tree(checkpoint.snapshot_path(workdir, 0), jax.device_get(state["params"]))
  log(
    f"training {cfg.model} on {dataset.source}: {cfg.steps} steps, batch {cfg.batch_size}, "
    f"{trainer.steps_per_epoch} steps/epoch, {cfg.num_seeds} replica(s), {trainer.mesh.size} device(s)"
  )
  start_epoch, last_save = int(state["epoch"]), time.time()
  timed_steps, timed_secs, epochs_run = 0, 0.0, 0
  for epoch in range(start_epoch, trainer.num_epochs):
    if max_epochs is not None and epochs_run >= max_epochs:
      log(f"stopping after {epochs_run} epoch(s) as asked; run again to resume")
      return {"stopped_at_epoch": epoch}
    begin = time.time()
    good_step = int(state["step"])
    state, metrics = trainer.run_epoch(state)
    metrics = jax.device_get(metrics)
    seconds = time.time() - begin
    bad_step = int(state["bad_step"])
    if bad_step >= 0:
      raise FloatingPointError(
        f"non-finite training loss at iteration {bad_step}; the last good checkpoint (step "
        f"{mngr.latest_step()}) is kept in {workdir}/checkpoints. Lower the learning rate or check the data."
      )
    active = np.asarray(metrics["active"])
    steps_done = int(active.sum())
    if epoch > start_epoch:  # the first epoch of a run includes compilation
      timed_steps, timed_secs = timed_steps + steps_done, timed_secs + seconds
    rate = timed_steps / timed_secs if timed_secs else steps_done / seconds
    step_now = int(state["step"])
    val = np.asarray(metrics["val_loss"])[active]
    evals = [(good_step + i + 1, v.tolist()) for i, v in enumerate(val) if not np.isnan(v).any()]
    line = {
      "epoch": epoch + 1,
      "step": step_now,
      "train_loss": np.asarray(metrics["loss"])[active].mean(0).tolist(),
      "train_accuracy": np.asarray(metrics["accuracy"])[active].mean(0).tolist(),
      "val_loss": evals,
      "best_val_loss": np.asarray(state["best_loss"]).tolist(),
      "best_step": np.asarray(state["best_step"]).tolist(),
      "seconds": seconds,
    }
    storage.append_jsonl(metrics_path, line)
    if (epoch + 1) % trainer.snapshot_every == 0 or epoch + 1 == trainer.num_epochs:
      storage.save_tree(checkpoint.snapshot_path(workdir, epoch + 1), jax.device_get(state["params"]))
    eta = (cfg.steps - step_now) / max(rate, 1e-9)
    log(
      f"epoch {epoch + 1}/{trainer.num_epochs} step {step_now}/{cfg.steps} "
      f"loss {np.mean(line['train_loss']):.4f} best val {np.mean(line['best_val_loss']):.4f} "
      f"{rate:.0f} steps/s ETA {eta:.0f}s"
    )
    epochs_run += 1
    if time.time() - last_save >= checkpoint_every_secs or epoch + 1 == trainer.num_epochs:
      checkpoint.save_state(mngr, step_now, jax.device_get(state))
      last_save = time.time()
  test_loss, test_acc = trainer.test_metrics(state)
  storage.save_tree(checkpoint.trained_path(workdir), best_variables(state))
  results = {
    "config": cfg.to_json(),
    "dataset": dataset.describe(),
    "best_step": np.asarray(state["best_step"]).tolist(),
    "best_val_loss": np.asarray(state["best_loss"]).tolist(),
    "test_accuracy": test_acc.tolist(),
    "test_loss": test_loss.tolist(),
    "test_accuracy_mean": float(test_acc.mean()),
    "test_accuracy_std": float(test_acc.std()),
    "steps_per_second": rate,
    "devices": trainer.mesh.size,
    "epochs": trainer.num_epochs,
  }
  storage.write_json(results_path, results)
  log(
    f"done: test accuracy {100 * test_acc.mean():.2f}% (min val loss {np.mean(results['best_val_loss']):.4f} "
    f"at step {results['best_step']})"
  )
  return results

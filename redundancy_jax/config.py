"""What a training run depends on: the report's recipes (SPEC section 1), the run's config, and the
optimizer it builds. `TrainConfig` is the single record of a run (its workdir's config.json)."""

from __future__ import annotations

import dataclasses
from typing import Any

import optax

from redundancy_jax import data as data_lib
from redundancy_jax.models import DEFAULT_DATASET, MODELS

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
  # Neyshabur et al. 2019's one-hidden-layer networks: SGD 0.01, momentum 0.9, batch 64, run to a training
  # loss target (`target_train_loss`), `steps` being the cap.
  "mlp": Recipe(100_000, 64, "momentum", 0.01),
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
  # The report's Figure 5: re-sample the classifier's initialisation with this seed, every other layer
  # (and the data order) as `seed` makes them. None: the classifier as `seed` makes it.
  classifier_seed: int | None = None
  # Stop at the end of the first epoch whose mean training loss is at most this for every replica.
  target_train_loss: float | None = None

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


def load_data(cfg: TrainConfig) -> data_lib.Dataset:
  """The dataset a resolved config trains on, with its seeded validation split."""
  return data_lib.load_dataset(
    cfg.dataset, data_dir=cfg.data_dir, source=cfg.data_source, seed=cfg.seed, val_size=cfg.val_size
  )

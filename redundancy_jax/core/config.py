"""Configuration, declared once: every experiment's options are the fields of a frozen dataclass, each
with its type, default, help text and `--quick` preset (`option`); the scripts derive their flags from
them (experiments/cli.py) and tests and notebooks build them directly:

  cfg = override(preset(LotteryConfig(), "quick"), rounds=1, workdir="/tmp/x")   # flat names = flag names

A field holding another config (an experiment's `train: TrainConfig`) contributes that config's fields
under their own names, so `--steps` sets `cfg.train.steps`. Also here: the report's training recipes
(DEFINITIONS.md section 1) and the run's `TrainConfig`; the network, data and optimizer it describes are
built by their owners (`models.from_config`, `data.from_config`, `optim.make_optimizer`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable

from redundancy_jax.core import data as data_lib
from redundancy_jax.core.optim import OPTIMIZERS
from redundancy_jax.models import DEFAULT_DATASET, MODELS, check_model, is_factory_spec
from redundancy_jax.core.errors import BadOption

_UNSET = object()


def option(default: Any, help: str, *, quick: Any = _UNSET, choices: tuple | Callable | None = None) -> Any:
  """A config field: its default, help text, value under the `quick` preset and valid choices (a tuple, or a
  function returning them when they come from a registry that may grow after import)."""
  metadata = {"help": help, "quick": quick, "choices": choices}
  if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
    return dataclasses.field(default_factory=lambda: default, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Option:
  """One leaf field of a config, as the command line sees it."""

  name: str  # flag name (the field's own name)
  path: tuple[str, ...]  # attribute path from the top config
  type: Any  # int, float, str, bool, or tuple[X, ...]
  default: Any
  help: str
  choices: tuple | None


def _is_config(tp) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _base(tp):
  """`int | None` -> int; other types unchanged."""
  if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp
  return tp


def options(cfg) -> list[Option]:
  """Every leaf field of the config `cfg` (a class or an instance; an instance gives the defaults),
  nested configs flattened; names are unique."""
  instance = cfg() if isinstance(cfg, type) else cfg
  out = []
  hints = typing.get_type_hints(type(instance))
  for f in dataclasses.fields(instance):
    tp, value = _base(hints[f.name]), getattr(instance, f.name)
    if _is_config(tp):
      out += [dataclasses.replace(o, path=(f.name, *o.path)) for o in options(value)]
    else:
      choices = f.metadata.get("choices")
      choices = tuple(choices()) if callable(choices) else choices  # a registry's: what is registered now
      out.append(Option(f.name, (f.name,), tp, value, f.metadata.get("help", ""), choices))
  names = [o.name for o in out]
  assert len(names) == len(set(names)), f"{type(instance).__name__}: option names repeat: {names}"
  return out


def _set(cfg, path: tuple[str, ...], value):
  if len(path) == 1:
    return dataclasses.replace(cfg, **{path[0]: value})
  return dataclasses.replace(cfg, **{path[0]: _set(getattr(cfg, path[0]), path[1:], value)})


def _coerce(o: Option, value):
  if value is None:
    return None
  if typing.get_origin(o.type) is tuple:
    item = typing.get_args(o.type)[0]
    values = value.split(",") if isinstance(value, str) else value
    try:
      return tuple(item(v) for v in values)
    except ValueError:
      raise BadOption(f"--{o.name} takes a list of {item.__name__} values, got {value!r}") from None
  if o.type is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def override(cfg, **values):
  """`cfg` with the options named (flat names, as the flags) set; an unknown name is an error listing
  the valid ones."""
  by_name = {o.name: o for o in options(cfg)}
  for name, value in values.items():
    if name not in by_name:
      raise BadOption(f"unknown option {name!r} of {type(cfg).__name__}; valid: {', '.join(by_name)}")
    cfg = _set(cfg, by_name[name].path, _coerce(by_name[name], value))
  return cfg


def preset(cfg, name: str = "quick"):
  """`cfg` with every field's `name` preset applied (a nested config's preset is a partial config whose
  non-None fields are applied)."""
  for f in dataclasses.fields(cfg):
    value = f.metadata.get(name, _UNSET)
    if value is _UNSET:
      continue
    if dataclasses.is_dataclass(value):
      partial = {g.name: getattr(value, g.name) for g in dataclasses.fields(value) if getattr(value, g.name) is not None}
      value = dataclasses.replace(getattr(cfg, f.name), **partial)
    cfg = dataclasses.replace(cfg, **{f.name: value})
  return cfg


def has_preset(cfg_cls, name: str = "quick") -> bool:
  return any(f.metadata.get(name, _UNSET) is not _UNSET for f in dataclasses.fields(cfg_cls))


def check_choices(cfg) -> None:
  """Every option with choices holds one of them (None allowed), else an error naming the valid ones."""
  for o in options(cfg):
    value = _get(cfg, o.path)
    if o.choices and value is not None:
      for v in value if isinstance(value, tuple) else (value,):
        if v not in o.choices:
          raise BadOption(f"--{o.name}={v!r} is not valid; valid: {', '.join(map(str, o.choices))}")


def _get(cfg, path):
  for p in path:
    cfg = getattr(cfg, p)
  return cfg


def to_json(cfg) -> dict:
  """A config as JSON (tuples as lists, nested configs as objects)."""
  return {f.name: to_json(v) if dataclasses.is_dataclass(v := getattr(cfg, f.name)) else
          list(v) if isinstance(v, tuple) else v for f in dataclasses.fields(cfg)}


def from_json(cls, obj: dict):
  """The config `to_json` wrote; unknown keys are an error."""
  hints = typing.get_type_hints(cls)
  values = {}
  for key, value in obj.items():
    if key not in hints:
      raise BadOption(f"{cls.__name__} has no field {key!r}")
    tp = _base(hints[key])
    values[key] = from_json(tp, value) if _is_config(tp) else tuple(value) if isinstance(value, list) else value
  return cls(**values)


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One row of the training table (DEFINITIONS.md section 1)."""

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
  # Neyshabur et al.'s one-hidden-layer networks, run to a training-loss target; `steps` is the cap.
  "mlp": Recipe(100_000, 64, "momentum", 0.01),
}
# A model without a recipe (a user's own, --model=FILE.py:FACTORY) trains with this unless the flags say
# otherwise: Adam 1e-3, 10,000 steps of 64.
DEFAULT_RECIPE = Recipe(10_000, 64, "adam", 1e-3)


def recipe(model: str) -> Recipe:
  """The model's recipe, `DEFAULT_RECIPE` for a model without one."""
  return RECIPES.get(model, DEFAULT_RECIPE)
# What an unset (None) field of TrainConfig becomes, besides the recipe's fields.
DEFAULTS = {"model": "lenet", "data_source": "auto", "width": 1.0, "eval_every": 100, "val_size": 5000, "seed": 0,
            "num_seeds": 1, "snapshot_every": 0}
# How a run is carried out, not what it computes: a run may resume with another value.
NOT_IDENTITY = ("num_devices", "replica_devices")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a training run computes from. A field left None is taken from the model's recipe or
  `DEFAULTS` by `resolve`; a workdir's config.json holds the resolved config, and an analysis reusing
  that run compares only the fields that are set."""

  model: str | None = option(None, f"Model: a registered one ({', '.join(MODELS)}; default lenet), or your own Flax "
                                  "model as FILE.py:FACTORY or MODULE:FACTORY, a callable factory(num_classes) "
                                  "returning a flax.linen or flax.nnx Module (trained by default with Adam 1e-3, "
                                  "10,000 steps of 64, on mnist).")
  dataset: str | None = option(None, "Dataset (default: the model's, mnist for lenet and mlp, cifar10 for the "
                                     "others).", choices=data_lib.DATASETS)
  data_dir: str | None = option(None, "Folder with the dataset's binary files, or a tfds data_dir.")
  data_source: str | None = option(None, "Where to read the data (default auto).", choices=data_lib.SOURCES)
  steps: int | None = option(None, "Training iterations (default: the recipe's).")
  batch_size: int | None = option(None, "Batch size (default: the recipe's).")
  optimizer: str | None = option(None, "Optimizer (default: the recipe's).", choices=OPTIMIZERS)
  learning_rate: float | None = option(None, "Learning rate (default: the recipe's).")
  lr_drops: tuple[float, ...] | None = option(None, "Fractions of the steps where the learning rate drops tenfold "
                                                    "(default: the recipe's).")
  weight_decay: float | None = option(None, "L2 weight decay (default: the recipe's).")
  augment: bool | None = option(None, "Random crop and flip (default: the recipe's).")
  width: float | None = option(None, "Width multiplier of every hidden layer (mlp: the hidden units; default 1).")
  batch_norm: bool | None = option(None, "BatchNorm after convolutions (default: on for vgg19 only).")
  eval_every: int | None = option(None, "Iterations between validation-loss evaluations (default 100).")
  val_size: int | None = option(None, "Training examples held out for validation (default 5000, of a full training "
                                      "set); the bundled MNIST subset always holds out 1,000 and ignores this.")
  seed: int | None = option(None, "Random seed: initialisation, data order, validation split (default 0).")
  num_seeds: int | None = option(None, "Independently seeded replicas trained together (default 1).")
  num_devices: int | None = option(None, "Devices to train on (default: every device of every process).")
  replica_devices: int | None = option(None, "Devices the seeds are spread over, the rest sharding each batch "
                                             "(default: the most that divide both the devices and the seeds).")
  snapshot_every: int | None = option(None, "Epochs between parameter snapshots (default 0: about 100 in all).")
  classifier_seed: int | None = option(None, "Re-sample the classifier's initialisation with this seed "
                                             "(the report's Figure 5).")
  target_train_loss: float | None = option(None, "Stop after the first epoch whose mean training loss is at most "
                                                 "this for every replica.")
  classes: tuple[int, ...] | None = option(None, "Class subsets, one count C per replica: replica r trains on C "
                                                 "classes drawn by (seed, r), labels 0..C-1, the other outputs masked "
                                                 "(default: every class; sets --num_seeds).")

  def resolve(self) -> "TrainConfig":
    """Every None filled from the model's recipe and `DEFAULTS`; names checked (the error lists the
    valid ones)."""
    check_choices(self)
    model = check_model(self.model or DEFAULTS["model"])
    recipe_ = recipe(model)
    filled = {k: v for k, v in DEFAULTS.items() if getattr(self, k) is None}
    filled.update({f.name: getattr(recipe_, f.name) for f in dataclasses.fields(Recipe) if getattr(self, f.name) is None})
    if self.dataset is None:
      filled["dataset"] = DEFAULT_DATASET.get(model, "mnist")
    if self.batch_norm is None and not is_factory_spec(model):
      filled["batch_norm"] = model == "vgg19"
    if is_factory_spec(model) and (self.width not in (None, 1.0) or self.batch_norm is not None):
      raise BadOption(f"--width and --batch_norm build the registered models; {model} builds itself (drop them)")
    if self.classes is not None and self.num_seeds is None:
      filled["num_seeds"] = len(self.classes)
    cfg = dataclasses.replace(self, **filled)
    if cfg.classes is not None and (len(cfg.classes) != cfg.num_seeds or min(cfg.classes, default=0) < 2):
      raise BadOption(f"--classes needs one class count of at least 2 per replica ({cfg.num_seeds}), got "
                       f"{list(cfg.classes)}; e.g. --classes=2,2,2,5,5,5 (num_seeds follows when not given)")
    bad = [f"--{k}={getattr(cfg, k)}" for k in ("steps", "batch_size", "eval_every", "num_seeds", "val_size")
           if getattr(cfg, k) <= 0]
    if bad:
      raise BadOption(f"{', '.join(bad)}: must be positive (at least 1)")
    return cfg

  def given(self) -> dict[str, Any]:
    """The fields that are set (not None), as JSON values: what a reused run must agree with."""
    return {k: v for k, v in to_json(self).items() if v is not None and k not in NOT_IDENTITY}

  @classmethod
  def from_json(cls, obj: dict) -> "TrainConfig":
    return from_json(cls, obj)

  def to_json(self) -> dict:
    return to_json(self)

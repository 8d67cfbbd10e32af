"""Finding, or training, the model an analysis script needs in a workdir, with its data and module."""

from __future__ import annotations

import os
from typing import Callable

from redundancy_jax import checkpoint, data, models, storage, train
from redundancy_jax.models import PlanNet, create_model


def stored_config(workdir: str) -> train.TrainConfig:
  """The resolved training config a workdir's config.json records."""
  return train.TrainConfig.from_json(storage.read_json(os.path.join(workdir, "config.json"))).resolve()


def ensure_trained(cfg: train.TrainConfig, workdir: str, log: Callable[[str], None] = print) -> train.TrainConfig:
  """The config of the trained model in `workdir`, training `cfg` there first when there is none.

  A workdir that already holds a trained model is reused as it is (its own config.json wins over
  `cfg`), but it must hold the same model and at least `cfg.num_seeds` replicas.
  """
  if not checkpoint.has_trained(workdir):
    log(f"no trained model in {workdir}: training {cfg.model} now (python -m experiments.train does the same)")
    train.train(cfg, workdir, log=log)
    return stored_config(workdir)
  stored = stored_config(workdir)
  if stored.model != cfg.model:
    raise ValueError(f"{workdir} holds a trained {stored.model}, not {cfg.model}; pass another --workdir")
  if stored.num_seeds < cfg.num_seeds:
    raise ValueError(f"{workdir} holds {stored.num_seeds} replica(s), fewer than the {cfg.num_seeds} asked for")
  log(f"reusing the trained {stored.model} in {workdir} (its config.json; delete results.json to retrain)")
  return stored


def load_data(cfg: train.TrainConfig) -> data.Dataset:
  """The dataset, with the same validation split, that `cfg` was trained on."""
  return data.load_dataset(
    cfg.dataset, data_dir=cfg.data_dir, source=cfg.data_source, seed=cfg.seed, val_size=cfg.val_size
  )


def build_model(cfg: train.TrainConfig, dataset: data.Dataset) -> PlanNet:
  """The model `cfg` trained, standardising its input by the dataset's mean and std."""
  return train.make_setup(cfg, dataset).model


def check_layer(cfg: train.TrainConfig, layer: str, prunable: bool = False) -> None:
  """Fails fast, before any training, when `layer` is not a layer of the model `cfg` describes."""
  cfg = cfg.resolve()
  models.check_layer(create_model(cfg.model, **train.model_options(cfg)), layer, prunable=prunable)

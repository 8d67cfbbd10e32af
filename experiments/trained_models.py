"""Finding, or training, the model an analysis script needs in a workdir, with its data and module."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from redundancy_jax import checkpoint, data, models, storage, train
from redundancy_jax.models import PlanNet, create_model


def stored_config(workdir: str) -> train.TrainConfig:
  """The resolved training config a workdir's config.json records."""
  return train.TrainConfig.from_json(storage.read_json(os.path.join(workdir, "config.json"))).resolve()


def check_reuse(workdir: str, given: Mapping[str, Any]) -> train.TrainConfig:
  """The config of the run in `workdir`, or an error when it was trained with other values of the
  training flags `given` on the command line (`flags_common.given_training_flags()`): a result must
  never be computed for, or attributed to, data or settings other than the model's."""
  stored = stored_config(workdir)
  recorded = stored.to_json()
  diffs = {k: v for k, v in given.items() if k not in checkpoint.NOT_IDENTITY and recorded.get(k) != v}
  if diffs:
    lines = [f"  --{k}: the trained model used {recorded.get(k)!r}, the flags ask {v!r}" for k, v in diffs.items()]
    same = " ".join(f"--{k}={recorded.get(k)}" for k in diffs)
    raise checkpoint.ConfigMismatch(
      f"{workdir} holds a model trained with other settings than the flags given:\n" + "\n".join(lines) +
      f"\nEither train these settings in a new workdir (add --workdir=NEW), or analyse the model that is there: "
      f"drop these flags or pass its values ({same})."
    )
  return stored


def ensure_trained(
  cfg: train.TrainConfig, workdir: str, given: Mapping[str, Any], log: Callable[[str], None] = print
) -> train.TrainConfig:
  """The config of the trained model in `workdir`, training `cfg` there first when there is none. A
  trained model is reused only when the training flags `given` agree with it (`check_reuse`)."""
  cfg = cfg.resolve()  # an unknown name fails here, before anything is printed or trained
  if not checkpoint.has_trained(workdir):
    log(f"no trained model in {workdir}: training {cfg.model} now (python -m experiments.train does the same)")
    train.train(cfg, workdir, log=log)
    return stored_config(workdir)
  stored = check_reuse(workdir, given)
  log(f"reusing the {stored.model} trained in {workdir} on {stored.dataset} (its config.json)")
  return stored


def build_model(cfg: train.TrainConfig, dataset: data.Dataset) -> PlanNet:
  """The model `cfg` trained, standardising its input by the dataset's mean and std."""
  return train.make_setup(cfg, dataset).model


def check_layer(cfg: train.TrainConfig, layer: str, prunable: bool = False) -> None:
  """Fails fast, before any training, when `layer` is not a layer of the model `cfg` describes."""
  cfg = cfg.resolve()
  models.check_layer(create_model(cfg.model, **train.model_options(cfg)), layer, prunable=prunable)

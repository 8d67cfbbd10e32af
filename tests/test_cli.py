"""The configs are the one source of every option: the flags derived from them (names, types, help,
choices, the quick presets), and `override` / `preset` as tests and notebooks use them."""

import dataclasses

import pytest
from absl import flags

from experiments import cli
from redundancy_jax.analyses import pruning
from redundancy_jax.analyses.prune_sweep import PruneSweepConfig
from redundancy_jax.core import config, data
from redundancy_jax.core.config import TrainConfig, override, preset
from redundancy_jax.related.lottery import LotteryConfig


def _parse(cfg_cls, *argv):
  fv = flags.FlagValues()
  cli.define_flags(cfg_cls, fv)
  fv(["prog", *argv])
  return cli.from_flags(cfg_cls, fv), fv


def test_flags_are_the_config_fields_nested_ones_flattened():
  cfg, fv = _parse(PruneSweepConfig, "--model=conv2", "--steps=30", "--layer=fc1,conv2", "--random_seeds=3")
  assert cfg.train == TrainConfig(model="conv2", steps=30)  # only what was given is set
  assert cfg.layer == ("fc1", "conv2") and cfg.random_seeds == 3 and cfg.level_step == 1
  assert {o.name for o in config.options(PruneSweepConfig)} == set(fv) - set(flags.FlagValues())
  assert _parse(PruneSweepConfig)[0] == PruneSweepConfig()  # no flag: the defaults, no training option set


def test_help_explains_every_criterion_and_lists_the_datasets():
  _, fv = _parse(PruneSweepConfig)
  text = " ".join(fv.get_help().split())  # absl wraps the help lines
  for name, help_text in pruning.CRITERION_HELP.items():
    assert f"{name}: {help_text}" in text
  assert "<" + "|".join(data.DATASETS) + ">" in text
  assert "teacher_student" not in data.DATASETS  # no model trains on it: not a dataset choice


def test_bad_values_name_the_valid_ones():
  with pytest.raises(flags.IllegalFlagValueError, match="value should be one of <lenet|conv2"):
    _parse(PruneSweepConfig, "--model=resnet")
  with pytest.raises(ValueError, match=r"--criteria='max_norm' is not valid; valid: max_mag, min_mag"):
    config.check_choices(override(PruneSweepConfig(), criteria="max_fp,max_norm"))
  with pytest.raises(ValueError, match="unknown option 'stpes' of PruneSweepConfig; valid: model, dataset"):
    override(PruneSweepConfig(), stpes=3)
  with pytest.raises(ValueError, match="--lr_drops takes a list of float values"):
    override(PruneSweepConfig(), lr_drops="half")


def test_quick_presets_then_the_flags_given():
  cfg, _ = _parse(LotteryConfig, "--quick", "--rounds=2")
  assert cfg.rounds == 2  # given: it wins over the preset's 4
  assert cfg.train == TrainConfig(steps=1500, num_seeds=1)  # the preset's, over the default's 3 seeds
  assert _parse(LotteryConfig)[0].train == TrainConfig(num_seeds=3)
  assert preset(LotteryConfig()) == dataclasses.replace(LotteryConfig(), rounds=4, train=TrainConfig(steps=1500,
                                                                                                     num_seeds=1))
  # a nested preset is applied over the nested config, keeping what it does not set
  assert preset(override(LotteryConfig(), model="conv2")).train == TrainConfig(model="conv2", steps=1500, num_seeds=1)
  with pytest.raises(flags.UnrecognizedFlagError):
    _parse(PruneSweepConfig, "--quick")  # no presets: no --quick


def test_resolve_fills_the_recipe_and_json_round_trips():
  cfg = TrainConfig(model="vgg19", steps=100).resolve()
  assert (cfg.batch_size, cfg.optimizer, cfg.lr_drops, cfg.weight_decay, cfg.augment) == (64, "momentum", (0.5, 0.75),
                                                                                          1e-4, True)
  assert cfg.batch_norm and cfg.dataset == "cifar10" and cfg.seed == 0 and cfg.num_seeds == 1
  assert TrainConfig.from_json(cfg.to_json()) == cfg
  nested = override(LotteryConfig(), lr_drops="0.5", rounds=3)
  assert config.from_json(LotteryConfig, config.to_json(nested)) == nested

"""The configs are the one source of every option: the flags derived from them (names, types, help,
choices, the quick presets), and `override` / `preset` as tests and notebooks use them."""

import dataclasses
import functools
import glob
import importlib
import os
import re

import pytest
from absl import flags

from experiments import cli
from experiments import prune_sweep as prune_sweep_script
from helpers import ROOT, python
from redundancy_jax.analyses import criteria
from redundancy_jax.analyses.prune_sweep import PruneSweepConfig
from redundancy_jax.core import config, data, parallel
from redundancy_jax.core.config import TrainConfig, override, preset
from redundancy_jax.models import MODELS, create_model, layer_names, prunable_layers
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
  text = " ".join(fv.get_help().split()).replace("- ", "-")  # absl wraps the help lines, also after a hyphen
  for c in criteria.REGISTRY.values():  # every registered criterion, in the registry's words
    assert f"{c.name}: {c.help}".replace("- ", "-") in text
  assert "<" + "|".join(data.DATASETS) + ">" in text
  assert "teacher_student" not in data.DATASETS  # no model trains on it: not a dataset choice


def test_bad_values_name_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown model 'resnet'; valid: a registered model \(lenet, conv2"):
    _parse(PruneSweepConfig, "--model=resnet")[0].train.resolve()
  with pytest.raises(ValueError, match=r"--criteria='max_norm' is not valid; valid: all, max_mag, min_mag"):
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


@functools.cache
def _scripts() -> dict[str, tuple]:
  """Every experiments/ script: its name -> (module, the config class it runs with)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
    source = open(path).read()
    if found := re.search(r"^  cli\.run\(main, ([\w.]+)\)$", source, re.MULTILINE):
      name = os.path.basename(path)[: -len(".py")]
      module = importlib.import_module(f"experiments.{name}")
      out[name] = (module, eval(found.group(1), vars(module)))
  return out


def _help(script: str) -> tuple[str, flags.FlagValues]:
  """What `python -m experiments.<script> --help` prints (as cli.run builds it), and its flags."""
  module, cfg_cls = _scripts()[script]
  fv = flags.FlagValues()
  cli.define_flags(cfg_cls, fv, command=script)
  cli.define_flags(parallel.ClusterConfig, fv, command=cli.CLUSTER)
  return cli.help_text(cfg_cls, module.__doc__, script, fv), fv


def _flat(text: str) -> str:
  return " ".join(text.split())  # absl wraps the help lines


def test_help_lists_the_command_options_first_then_training_then_cluster_each_in_declaration_order():
  text, _ = _help("prune_sweep")
  assert text.startswith(prune_sweep_script.__doc__.strip())
  headings = [line[:-1] for line in text.splitlines() if line.endswith(" options:")]
  assert headings == ["prune_sweep options", "training options", "cluster and device options"]
  options = config.options(PruneSweepConfig)
  own = [o.name for o in options if len(o.path) == 1]
  training = [o.name for o in options if o.path[0] == "train"]
  cluster = [o.name for o in config.options(parallel.ClusterConfig)]
  assert own[:2] == ["workdir", "checkpoint"] and "criteria" in own and "steps" in training  # not alphabetical
  lines = text.splitlines()
  flag_lines = [next(i for i, line in enumerate(lines) if re.match(rf"  --(\[no\])?{name}:", line))
                for name in own + training + cluster]
  assert flag_lines == sorted(flag_lines)  # own, then training, then cluster, each in declaration order
  assert lines.index("training options:") < flag_lines[len(own)]  # the headings separate the groups
  assert lines.index("cluster and device options:") < flag_lines[len(own) + len(training)]
  assert "--verbosity:" not in text and "--helpfull:" not in text  # absl's own flags: only in --helpfull


def test_nested_configs_other_than_training_come_before_it_under_their_own_headings():
  text, _ = _help("dynamics")
  headings = [line[:-1] for line in text.splitlines() if line.endswith(" options:")]
  assert headings == ["dynamics options", "graph options", "layout options", "training options",
                      "cluster and device options"]
  lines = text.splitlines()
  assert lines[lines.index("layout options:") + 1].strip() == "The d3-force layout."  # the nested field's help


@pytest.mark.parametrize("script", sorted(_scripts()))
def test_help_has_no_markdown_and_states_each_default_once(script):
  text, fv = _help(script)
  assert "`" not in text and "**" not in text
  assert "(default: )" not in _flat(text) and "(default: ;" not in _flat(text)
  for group in cli.groups(_scripts()[script][1], script):
    for name in group.names:
      assert len(re.findall(r"\(default\b", fv[name].help)) <= 1, (name, fv[name].help)


def test_an_empty_default_is_not_shown_and_a_stated_one_stays():
  _, fv = _help("reproduce")
  assert _flat(fv["seeds"].help) == "Training seeds: one number for every model, or model=K pairs (default: the profile's)."


def test_a_default_the_command_sets_replaces_the_one_stated_for_the_unset_case():
  _, fv = _help("lottery")
  num_seeds, quick = LotteryConfig().train.num_seeds, preset(LotteryConfig()).train.num_seeds
  assert num_seeds != config.DEFAULTS["num_seeds"]  # the command's own default, not TrainConfig's
  assert fv["num_seeds"].help.endswith(f"(default: {num_seeds}; --quick: {quick}).")
  assert f"default {config.DEFAULTS['num_seeds']}" not in fv["num_seeds"].help
  assert _flat(fv["steps"].help) == (f"Training iterations (default: the recipe's; --quick: "
                                     f"{preset(LotteryConfig()).train.steps}).")


def test_val_size_help_gives_the_full_default_and_the_bundled_subsets_size():
  _, fv = _help("prune_sweep")
  text = _flat(fv["val_size"].help)
  assert f"default {config.DEFAULTS['val_size']}" in text
  assert f"bundled MNIST subset always holds out {data.BUNDLED_SPLIT['validation']:,}" in text


@pytest.mark.parametrize("script, option, names_of", [("prune_sweep", "layer", prunable_layers),
                                                      ("dynamics", "layer", prunable_layers),
                                                      ("subspace", "layer", layer_names),
                                                      ("classes", "layer", layer_names),
                                                      ("subspace_table", "layer", layer_names)])
def test_layer_help_lists_each_models_layers_from_the_registry(script, option, names_of):
  _, fv = _help(script)
  assert "{" in fv[option].help  # filled in only when help is printed (models start JAX's backend)
  text = _flat(cli.expand_layers(fv[option].help))
  assert "{" not in text
  assert f"lenet: {', '.join(names_of(create_model('lenet')))};" in text
  assert f"mlp: {', '.join(names_of(create_model('mlp')))})" in text
  for model in MODELS:
    names = names_of(create_model(model))
    assert re.search(rf"\b{model}: {names[0]}\b.*\b{names[-1]}\b", text), (model, text)
  if names_of is prunable_layers:  # the classifier is not offered
    assert f"lenet: {', '.join(layer_names(create_model('lenet')))}" not in text


def test_compact_shortens_long_numbered_runs_only():
  assert cli._compact(["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]) == "conv1..conv4, fc1, fc2"
  assert cli._compact(["conv1", "conv2", "fc1", "fc2", "fc3"]) == "conv1, conv2, fc1, fc2, fc3"
  assert cli._compact(["conv1", "conv3", "conv4", "conv5"]) == "conv1, conv3, conv4, conv5"


def test_the_script_prints_the_grouped_help_and_exits_0():
  """The one subprocess: what `--help` and `-h` print is `help_text`, before absl parses (absl's own help
  lists the flags alphabetically and exits 1)."""
  result = python("-m", "experiments.prune_sweep", "-h", timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout == _help("prune_sweep")[0]

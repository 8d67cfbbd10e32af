"""What a reproduction runs: the command's options, the profiles (presets of the experiments' own
configs: a stage's configuration *is* the config of the command that computes it), the stages and the
data each model is trained on.

  cfg = ReproduceConfig(profile="quick", stages=("lenet",))    # python -m experiments.reproduce --stages=lenet
"""

from __future__ import annotations

import dataclasses

from redundancy_jax.core import config, data
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.related.clustering import ClusteringConfig
from redundancy_jax.related.lottery import LotteryConfig
from redundancy_jax.related.teacher_student import TeacherStudentConfig
from redundancy_jax.related.width import WidthConfig
from redundancy_jax.core.errors import BadOption


@dataclasses.dataclass(frozen=True)
class Training:
  """How one model is trained in a profile: `steps` None takes the recipe's."""

  steps: int | None
  width: float
  seeds: int


@dataclasses.dataclass(frozen=True)
class Profile:
  """A profile's training per model, the sizes of its analyses, and the preset of the related work."""

  models: dict
  examples: int | None  # test images per evaluation (None: the whole test split)
  level_step: int  # pruning levels swept: every level_step-th (always 0 and m)
  num_ranks: int  # ranks in the accuracy-versus-rank grid
  max_frames: int  # snapshots shown by the dynamics graphs (first and last always)
  ticks: int  # force-layout ticks per frame
  related: str | None  # the related-work scripts' preset ("quick"), or None for their defaults
  random_seeds: int = 5
  classes: dict = dataclasses.field(default_factory=dict)  # {model: the preset of its open-question run, or None}
  note: str = ""


PROFILES = {
  "quick": Profile(
    models={"lenet": Training(2000, 1.0, 3), "conv2": Training(500, 0.25, 2), "conv6": Training(300, 0.25, 2),
            "vgg19": Training(200, 0.125, 2)},
    examples=2000, level_step=2, num_ranks=16, max_frames=10, ticks=100, related="quick", classes={"lenet": "quick"},
    note="reduced steps, widths and seeds, 2,000 test images per evaluation: a smoke run of every analysis, "
         "not the report's numbers",
  ),
  "cpu": Profile(
    models={"lenet": Training(None, 1.0, 10), "conv2": Training(2000, 1.0, 3), "conv6": Training(500, 1.0, 2),
            "vgg19": Training(500, 0.25, 2)},
    examples=None, level_step=4, num_ranks=32, max_frames=30, ticks=300, related="quick",
    classes={"lenet": None, "conv2": None},
    note="the full profile cut to what 2 CPU cores reach in about two hours: LeNet at its recipe with 10 seeds; "
         "Conv-2 at a tenth of its recipe with 3 seeds; Conv-6 (500 steps) and VGG19 (500 steps, width 1/4) "
         "far below theirs with 2 seeds; the open question for LeNet (its recipe) and Conv-2 (a tenth of its "
         "recipe); the whole test split per evaluation, every 4th pruning level; the related work at its quick "
         "presets",
  ),
  "full": Profile(
    models={name: Training(None, 1.0, 10) for name in ("lenet", "conv2", "conv6", "vgg19")},
    examples=None, level_step=1, num_ranks=48, max_frames=60, ticks=300, related=None,
    classes={"lenet": None, "conv2": None},
    note="the report's recipes (DEFINITIONS.md section 1) and 10 seeds",
  ),
}
MODELS = ("lenet", "conv2", "conv6", "vgg19")
# The report's own datasets; `--dataset=auto` uses them when both are present.
REPORT_DATASETS = {"lenet": "mnist", "conv2": "cifar10", "conv6": "cifar10", "vgg19": "cifar10"}
DATASET_CHOICES = ("auto", "bundled", "mnist", "fashion_mnist", "cifar10")
# Layers each analysis uses: the report's (LeNet fc1/fc2 and Conv-2 fc1/conv2 pruned, Conv-2 fc1 and
# VGG19's last conv layer conv16 as graphs), and for the other models (the notebook's MODEL) fc1 and
# the last conv layer.
PRUNED = {"lenet": ("fc1", "fc2"), "conv2": ("fc1", "conv2"), "conv6": ("fc1", "conv6"), "vgg19": ("fc1", "conv16")}
DYNAMICS_LAYER = {"lenet": "fc1", "conv2": "fc1", "conv6": "conv6", "vgg19": "conv16"}
RELATED = ("lottery", "clustering", "teacher_student", "width")
# The open question's class counts where a model runs fewer than `ClassesConfig`'s (the issue's minimum for Conv-2).
CLASS_COUNTS = {"conv2": (2, 5, 10)}
REPORT_STAGES = (
  "lenet.train", "lenet.prune", "lenet.subspace", "lenet.classes",
  "conv2.train", "conv2.prune", "conv2.dynamics", "conv2.resample", "conv2.subspace", "conv2.classes",
  "conv6.train", "conv6.subspace",
  "vgg19.train", "vgg19.dynamics", "vgg19.subspace",
)
STAGES = REPORT_STAGES + tuple(f"related.{name}" for name in RELATED)
GROUPS = {"all": STAGES, "report": REPORT_STAGES}


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
  """`python -m experiments.reproduce`."""

  profile: str = option("quick", "quick: every analysis in minutes on a CPU; cpu: the full profile cut to about two "
                                 "hours on 2 CPU cores; full: the report's recipes.",
                        choices=tuple(PROFILES))
  dataset: str = option("auto", "auto: the report's data (MNIST and CIFAR-10) when both are supplied, else "
                                "Fashion-MNIST when installed, else the bundled MNIST subset (bundled: that subset "
                                "whatever is installed).", choices=DATASET_CHOICES)
  data_dir: str | None = option(None, "Folder with the dataset's binary files, or a tfds data_dir.")
  stages: tuple[str, ...] = option(("all",), "'all', 'report' (section 3), 'related' (section 2), model names "
                                             f"({', '.join(MODELS)}) or stages ({', '.join(STAGES)}).")
  seeds: tuple[str, ...] = option((), "Training seeds: one number for every model, or model=K pairs (default: "
                                      "the profile's).")
  workdir: str = option("runs/report", "Folder of this reproduction (training runs, stages, the page).")
  num_devices: int | None = option(None, "Devices each training run shards its batch over (default: all).")


def choose_stages(names, profile: Profile | None = None) -> list[str]:
  """The stages `--stages` selects, in pipeline order (with `profile`, less the open-question stages it
  does not run); an unknown name is an error listing the valid ones."""
  chosen = set()
  for name in names:
    if name in GROUPS:
      chosen.update(GROUPS[name])
    elif name in MODELS or name == "related":
      chosen.update(s for s in STAGES if s.startswith(f"{name}."))
    elif name in STAGES:
      chosen.add(name)
    else:
      raise BadOption(f"unknown stage {name!r}; valid: all, report, related, the models {', '.join(MODELS)}, or "
                       f"the stages {', '.join(STAGES)}")
  if not chosen:
    raise BadOption("--stages selects nothing; give 'all', a model or a stage")
  runs = lambda s: profile is None or not s.endswith(".classes") or s.split(".")[0] in profile.classes
  return [s for s in STAGES if s in chosen and runs(s)]


def parse_seeds(values, profile: Profile) -> dict[str, int]:
  """Training seeds per model: the profile's, overridden by `--seeds=K` (all) or `--seeds=model=K,...`."""
  seeds = {name: t.seeds for name, t in profile.models.items()}
  for value in values:
    name, _, count = str(value).rpartition("=")
    if name and name not in MODELS:
      raise BadOption(f"--seeds: unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if not count.isdigit() or int(count) < 1:
      raise BadOption(f"--seeds: {value!r} is not a positive count; write --seeds=10 or --seeds=lenet=10,conv2=1")
    seeds.update({name: int(count)} if name else {m: int(count) for m in seeds})
  return seeds


def choose_datasets(choice: str, data_dir: str | None) -> dict[str, dict]:
  """{model: {"dataset", "data_source"}} for `--dataset` (see `ReproduceConfig.dataset`)."""
  if choice not in DATASET_CHOICES:
    raise BadOption(f"unknown dataset {choice!r}; valid: {', '.join(DATASET_CHOICES)}")
  if choice == "auto":
    if data.available("mnist", data_dir) and data.available("cifar10", data_dir):
      return {m: {"dataset": d, "data_source": "auto"} for m, d in REPORT_DATASETS.items()}
    if data.available("fashion_mnist", data_dir):
      return {m: {"dataset": "fashion_mnist", "data_source": "auto"} for m in MODELS}
    choice = "bundled"
  if choice == "bundled":
    return {m: {"dataset": "mnist", "data_source": "bundled"} for m in MODELS}
  return {m: {"dataset": choice, "data_source": "auto"} for m in MODELS}


def related_config(name: str, profile: Profile, root: str):
  """The related-work experiment `name` as the profile runs it: the script's own quick preset (quick
  profile) or its defaults (full), writing into <root>/related/<name>; its results say on which data."""
  cfg = {"lottery": LotteryConfig(), "clustering": ClusteringConfig(), "teacher_student": TeacherStudentConfig(),
         "width": WidthConfig()}[name]
  if profile.related:
    cfg = config.preset(cfg, profile.related)
  workdir = f"{root}/related/{name}"
  if name == "clustering":
    return dataclasses.replace(cfg, workdir=workdir, conv2_workdir=f"{workdir}/conv2")
  return dataclasses.replace(cfg, workdir=workdir)


def training_config(profile: Profile, model: str, seeds: int, datasets: dict, data_dir: str | None,
                    num_devices: int | None, resampled: bool = False) -> TrainConfig:
  """The resolved training config of `model` in the profile (with `resampled`, Figure 5's second run)."""
  t = profile.models[model]
  return TrainConfig(
    model=model, data_dir=data_dir, steps=t.steps, width=t.width, num_seeds=seeds,
    classifier_seed=1 if resampled else None, num_devices=num_devices, **datasets[model],
  ).resolve()

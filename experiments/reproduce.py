"""Rebuilds the report's evidence (section 3) from one command, as one offline page.

  python -m experiments.reproduce [--profile=quick|full] [--dataset=auto|bundled|mnist|fashion_mnist|cifar10]
      [--stages=all|lenet,conv2,...|conv2.prune,...] [--seeds=10|lenet=10,conv2=1] [--workdir=runs/report]

Runs the stages (`--stages` takes model names, which select all of that model's stages, or stage names;
the valid ones are in STAGES) in order, each once: a stage that finished with the same configuration is
reused, a training run continues from its last checkpoint, so a killed run continues where it stopped.
A stage that finished with another configuration is an error (use another --workdir). Then writes
<workdir>/index.html (one offline page, opened straight from disk) and <workdir>/report.md from every
finished stage in the workdir: Figures 1-8 as numbered in the report, the claims with computed verdicts,
and provenance. Layout of <workdir>: runs/<model>[_resampled]/ (training runs), stages/<stage>.json
(each stage's configuration, results and wall time), figures/ (PNG and PDF, the interactive viewers).

`--dataset=auto` takes the best real data present: the report's own (MNIST for LeNet, CIFAR-10 for the
conv nets) when both are supplied, else Fashion-MNIST when installed, else the bundled MNIST subset
(`--dataset=bundled` asks for that subset whatever is installed: a smoke run, as the notebook's QUICK).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np
from absl import flags
from scipy import optimize

from experiments import app
from redundancy_jax import (
  checkpoint, config, console, data, dynamics, force_layout, pruning, report, storage, subspace, train,
)
from redundancy_jax.models import layer_names, layer_of
from redundancy_jax.plots import dynamics as dynamics_plots
from redundancy_jax.plots import pruning as pruning_plots
from redundancy_jax.plots import spectral as spectral_plots


@dataclasses.dataclass(frozen=True)
class Training:
  """How one model is trained in a profile: `steps` None takes the recipe's."""

  steps: int | None
  width: float
  seeds: int


@dataclasses.dataclass(frozen=True)
class Profile:
  """A profile's training per model and the sizes of its analyses."""

  models: dict
  examples: int | None  # test images per evaluation (None: the whole test split)
  level_step: int  # pruning levels swept: every level_step-th (always 0 and m)
  num_ranks: int  # ranks in the accuracy-versus-rank grid
  max_frames: int  # snapshots shown by the dynamics graphs (first and last always)
  ticks: int  # force-layout ticks per frame
  random_seeds: int = 5
  note: str = ""


PROFILES = {
  "quick": Profile(
    models={"lenet": Training(2000, 1.0, 3), "conv2": Training(500, 0.25, 2), "conv6": Training(300, 0.25, 2),
            "vgg19": Training(200, 0.125, 2)},
    examples=2000, level_step=2, num_ranks=16, max_frames=10, ticks=100,
    note="reduced steps, widths and seeds, 2,000 test images per evaluation: a smoke run of every analysis, "
         "not the report's numbers",
  ),
  "full": Profile(
    models={name: Training(None, 1.0, 10) for name in ("lenet", "conv2", "conv6", "vgg19")},
    examples=None, level_step=1, num_ranks=48, max_frames=60, ticks=300,
    note="the report's recipes (SPEC section 1) and 10 seeds",
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
STAGES = (
  "lenet.train", "lenet.prune", "lenet.subspace",
  "conv2.train", "conv2.prune", "conv2.dynamics", "conv2.resample", "conv2.subspace",
  "conv6.train", "conv6.subspace",
  "vgg19.train", "vgg19.dynamics", "vgg19.subspace",
)

flags.DEFINE_enum("profile", "quick", list(PROFILES), "quick: every analysis in minutes on a CPU; full: the report's recipes.")
flags.DEFINE_string("dataset", "auto", f"One of {', '.join(DATASET_CHOICES)}.")
flags.DEFINE_string("data_dir", None, "Folder with the dataset's binary files, or a tfds data_dir.")
flags.DEFINE_list("stages", ["all"], f"'all', model names ({', '.join(MODELS)}) or stages ({', '.join(STAGES)}).")
flags.DEFINE_list("seeds", [], "Training seeds: one number for every model, or model=K pairs (default: the profile's).")
flags.DEFINE_string("workdir", "runs/report", "Folder of this reproduction (training runs, stages, the page).")
flags.DEFINE_list("related", ["runs/lottery/lenet", "runs/clustering", "runs/teacher_student", "runs/width"],
                  "Output folders of the related-work scripts whose results.json and figure the page shows.")
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- choices


def choose_stages(names: list[str]) -> list[str]:
  """The stages `--stages` selects, in pipeline order; an unknown name is an error listing the valid ones."""
  chosen = set()
  for name in names:
    if name == "all":
      chosen.update(STAGES)
    elif name in MODELS:
      chosen.update(s for s in STAGES if s.startswith(f"{name}."))
    elif name in STAGES:
      chosen.add(name)
    else:
      raise ValueError(f"unknown stage {name!r}; valid: all, the models {', '.join(MODELS)}, or the stages "
                       f"{', '.join(STAGES)}")
  if not chosen:
    raise ValueError("--stages selects nothing; give 'all', a model or a stage")
  return [s for s in STAGES if s in chosen]


def parse_seeds(values: list[str], profile: Profile) -> dict[str, int]:
  """Training seeds per model: the profile's, overridden by `--seeds=K` (all) or `--seeds=model=K,...`."""
  seeds = {name: t.seeds for name, t in profile.models.items()}
  for value in values:
    name, _, count = value.rpartition("=")
    if name and name not in MODELS:
      raise ValueError(f"--seeds: unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if not count.isdigit() or int(count) < 1:
      raise ValueError(f"--seeds: {value!r} is not a positive count; write --seeds=10 or --seeds=lenet=10,conv2=1")
    seeds.update({name: int(count)} if name else {m: int(count) for m in seeds})
  return seeds


def choose_datasets(choice: str, data_dir: str | None) -> dict[str, dict]:
  """{model: {"dataset", "data_source"}} for `--dataset` (see the module docstring for "auto")."""
  if choice not in DATASET_CHOICES:
    raise ValueError(f"unknown dataset {choice!r}; valid: {', '.join(DATASET_CHOICES)}")
  if choice == "auto":
    if data.available("mnist", data_dir) and data.available("cifar10", data_dir):
      return {m: {"dataset": d, "data_source": "auto"} for m, d in REPORT_DATASETS.items()}
    if data.available("fashion_mnist", data_dir):
      return {m: {"dataset": "fashion_mnist", "data_source": "auto"} for m in MODELS}
    choice = "bundled"
  if choice == "bundled":
    return {m: {"dataset": "mnist", "data_source": "bundled"} for m in MODELS}
  return {m: {"dataset": choice, "data_source": "auto"} for m in MODELS}


# ----------------------------------------------------------------------------- the run


class Reproduction:
  """The stages of one reproduction in one workdir; each returns a JSON-ready result."""

  def __init__(self, root: str, profile_name: str, datasets: dict, seeds: dict, data_dir: str | None, log=print,
               num_devices: int | None = None):
    self.root, self.profile_name, self.profile = root, profile_name, PROFILES[profile_name]
    self.datasets, self.seeds, self.data_dir, self.log = datasets, seeds, data_dir, log
    self.num_devices = num_devices  # devices each training run shards its batch over (None: all)
    self.figures = os.path.join(root, "figures")
    self._data = {}

  # --- configuration

  def train_config(self, model: str, resampled: bool = False) -> train.TrainConfig:
    t = self.profile.models[model]
    return train.TrainConfig(
      model=model, data_dir=self.data_dir, steps=t.steps, width=t.width, num_seeds=self.seeds[model],
      classifier_seed=1 if resampled else None, num_devices=self.num_devices, **self.datasets[model],
    ).resolve()

  def stage_config(self, stage: str) -> dict:
    """Everything the stage's result depends on: the training config(s) and the analysis sizes."""
    model, kind = stage.split(".")
    cfg = {"stage": stage, "training": self.train_config(model).to_json()}
    if kind == "resample":
      cfg["resampled"] = self.train_config(model, resampled=True).to_json()
    if kind != "train":
      p = self.profile
      cfg["analysis"] = {"examples": p.examples, "level_step": p.level_step, "num_ranks": p.num_ranks,
                         "max_frames": p.max_frames, "ticks": p.ticks, "random_seeds": p.random_seeds}
    return cfg

  def run_dir(self, model: str, resampled: bool = False) -> str:
    return os.path.join(self.root, "runs", model + ("_resampled" if resampled else ""))

  def stage_path(self, stage: str) -> str:
    return os.path.join(self.root, "stages", f"{stage}.json")

  # --- helpers shared by the stages

  def dataset(self, cfg: train.TrainConfig) -> data.Dataset:
    key = (cfg.dataset, cfg.data_source, cfg.seed, cfg.val_size)
    if key not in self._data:
      self._data[key] = config.load_data(cfg)
    return self._data[key]

  def trained(self, model: str, replica: int = 0, resampled: bool = False):
    """(module, variables of one replica, dataset, config) of a finished training stage."""
    cfg = self.train_config(model, resampled)
    workdir = self.run_dir(model, resampled)
    if not checkpoint.has_trained(workdir):
      raise FileNotFoundError(f"{workdir} holds no trained model: run the stage {model}.train first "
                              f"(--stages={model} runs every stage of {model})")
    ds = self.dataset(cfg)
    return train.make_setup(cfg, ds).model, checkpoint.load_trained(workdir, replica=replica), ds, cfg

  def test_split(self, ds: data.Dataset):
    n = self.profile.examples
    return ds.test_x[:n], ds.test_y[:n]

  def figure(self, name: str) -> str:
    os.makedirs(self.figures, exist_ok=True)
    return os.path.join(self.figures, name)

  # --- stages

  def train_stage(self, model: str, resampled: bool = False) -> dict:
    cfg = self.train_config(model, resampled)
    results = train.train(cfg, self.run_dir(model, resampled), dataset=self.dataset(cfg), log=self.log)
    if "stopped_at_epoch" in results:
      raise console.Interrupted("training stopped early")
    module, variables, _, _ = self.trained(model, resampled=resampled)
    conv = sum(int(np.size(variables["params"][name]["kernel"])) + int(np.size(variables["params"][name]["bias"]))
               for name in layer_names(module) if layer_of(module, name).kind == "conv")
    keep = ("test_accuracy", "test_accuracy_mean", "test_accuracy_std", "best_step", "best_val_loss",
            "steps_per_second", "devices", "epochs", "parameters", "dataset")
    return {**{k: results[k] for k in keep}, "conv_parameters": conv, "steps": cfg.steps,
            "recipe_steps": config.RECIPES[model].steps, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
            "learning_rate": cfg.learning_rate, "width": cfg.width, "seeds": cfg.num_seeds,
            "layers": [dataclasses.asdict(layer_of(module, n)) for n in layer_names(module)]}

  def prune_stage(self, model: str) -> dict:
    module, variables, ds, cfg = self.trained(model)
    x, y = self.test_split(ds)
    layers = {}
    for layer in PRUNED[model]:
      m = variables["params"][layer]["kernel"].shape[-1]
      levels = np.unique(np.concatenate([np.arange(0, m + 1, self.profile.level_step), [m]]))
      begin = time.time()
      r = pruning.compare_criteria(module, variables, layer, x, y, levels=levels,
                                   random_seeds=self.profile.random_seeds, seed=cfg.seed)
      r.pop("orders")
      r["seconds"] = time.time() - begin
      self.log(f"  {model} {layer}: {m} units x {len(levels)} levels in {r['seconds']:.1f}s")
      layers[layer] = r
    results = {"config": {"model": model, "split": "test", "examples": int(len(y))}, "dataset": ds.describe(),
               "layers": layers}
    figure = pruning_plots.save_figure(results, self.figure(f"figure2_{model}"), loss=True)
    return {**results, "figure": os.path.relpath(figure[0], self.root)}

  def _snapshots(self, workdir: str) -> dict:
    epochs = checkpoint.snapshot_epochs(workdir)
    picks = np.unique(np.linspace(0, len(epochs) - 1, min(len(epochs), self.profile.max_frames)).round().astype(int))
    return {epochs[i]: checkpoint.load_snapshot(workdir, epochs[i]) for i in picks}

  def _analyse(self, module, workdir: str, layer: str, ds, threshold=None) -> dict:
    cfg = dynamics.DynamicsConfig(layer=layer, threshold=threshold,
                                  layout=force_layout.LayoutParams(ticks=self.profile.ticks))
    x = ds.test_x[: min(1000, self.profile.examples or 1000)]
    snapshots = self._snapshots(workdir)
    result = dynamics.analyse(module, snapshots, cfg, x=x, log=lambda s: None)
    first, last = min(snapshots), max(snapshots)
    result["weights_first"] = np.asarray(pruning.unit_matrix(snapshots[first], layer), np.float64)
    result["weights_last"] = np.asarray(pruning.unit_matrix(snapshots[last], layer), np.float64)
    return result

  def dynamics_stage(self, model: str) -> dict:
    module, _, ds, _ = self.trained(model)
    layer = DYNAMICS_LAYER[model]
    result = self._analyse(module, self.run_dir(model), layer, ds)
    runs = [(model, result)]
    name = f"{model}_{layer}"
    figure = dynamics_plots.save_init_vs_converged(runs, self.figure(f"dynamics_{name}.png"))
    page = dynamics_plots.write_page(self.figure(f"dynamics_{name}.html"), runs)
    return {"layer": layer, **report.dynamics_summary(result), "figure": os.path.relpath(figure[0], self.root),
            "viewer": os.path.relpath(page, self.root)}

  def resample_stage(self, model: str) -> dict:
    """Figure 5: the run with a re-sampled classifier against the main run, replica 0 of each."""
    self.train_stage(model, resampled=True)
    module, _, ds, _ = self.trained(model)
    out = {"layers": {}}
    for layer in (last_conv(module), "fc1"):
      a = self._analyse(module, self.run_dir(model), layer, ds)
      b = self._analyse(module, self.run_dir(model, resampled=True), layer, ds, threshold=a["threshold"])
      runs = [(model, a), (f"{model}, classifier re-sampled", b)]
      figure = dynamics_plots.save_init_vs_converged(runs, self.figure(f"figure5_{model}_{layer}.png"))
      page = dynamics_plots.write_page(self.figure(f"figure5_{model}_{layer}.html"), runs)
      out["layers"][layer] = {**compare_runs(a, b), "figure": os.path.relpath(figure[0], self.root),
                              "viewer": os.path.relpath(page, self.root)}
    return out

  def subspace_stage(self, model: str) -> dict:
    module, variables, ds, cfg = self.trained(model)
    x, y = self.test_split(ds)
    workdir = self.run_dir(model)
    layers = ["fc1"] + ([last_conv(module)] if model == "vgg19" else [])
    analyses = {}
    for layer in layers:
      analyses[layer] = subspace.analyze_layer(module, variables, checkpoint.load_snapshot(workdir, 0), layer, x, y,
                                               num_ranks=self.profile.num_ranks)
    title = f"{model} on {data.label(ds.describe())}"
    esd = spectral_plots.save(
      spectral_plots.esd_figure([(l, a["init"], a["trained"]) for l, a in analyses.items()], 2, title),
      self.figure(f"esd_{model}"))
    residual = spectral_plots.save(
      spectral_plots.residuals_figure([(l, a["trained"], a["init"], a["update"]) for l, a in analyses.items()],
                                      2, title), self.figure(f"residuals_{model}"))
    best_steps = storage.read_json(os.path.join(workdir, "results.json"))["best_step"]
    seeds = []
    for replica in range(cfg.num_seeds):
      entry = subspace.low_rank_replacement(
        module, checkpoint.load_trained(workdir, replica=replica),
        checkpoint.load_snapshot(workdir, 0, replica=replica), "fc1", x, y)
      seeds.append({"seed": replica, **entry, "best_step": best_steps[replica]})
    row = subspace.table_row(seeds, model=model, layer="fc1", dataset=data.label(ds.describe()), width=cfg.width,
                             steps=cfg.steps)
    brief = lambda a: {"layer": a["layer"], "init": report.spectrum_brief(a["init"]),
                       "trained": report.spectrum_brief(a["trained"])}
    return {"layers": {l: brief(a) for l, a in analyses.items()}, "row": row,
            "figures": [os.path.relpath(esd[0], self.root), os.path.relpath(residual[0], self.root)]}

  def run_stage(self, stage: str) -> dict:
    model, kind = stage.split(".")
    if kind == "train":
      return self.train_stage(model)
    return getattr(self, f"{kind}_stage")(model)


def last_conv(module) -> str:
  return [n for n in layer_names(module) if layer_of(module, n).kind == "conv"][-1]


def compare_runs(a: dict, b: dict) -> dict:
  """How two runs' graphs of one layer differ at convergence (Figure 5; BUILD_NOTES gives the definition).

  Units are matched by index (both runs start from the same weights for this layer) and by the best
  one-to-one matching on cosine similarity (Hungarian algorithm); the graphs are compared at run a's
  threshold by their edge sets (Jaccard index), components, largest component and repeated units."""
  cos = _cross_cosine(a["weights_last"], b["weights_last"])
  rows, cols = optimize.linear_sum_assignment(-cos)
  ea = {tuple(e[:2]) for e in np.asarray(a["frames"][-1]["edges"]).astype(int).tolist()}
  eb = {tuple(e[:2]) for e in np.asarray(b["frames"][-1]["edges"]).astype(int).tolist()}
  sa, sb = a["frames"][-1]["stats"], b["frames"][-1]["stats"]
  return {
    "units": int(len(cos)),
    "threshold": float(a["threshold"]),
    "same_unit_cosine": float(np.mean(np.diag(cos))),
    "matched_cosine": float(np.mean(cos[rows, cols])),
    "matched_to_self": float(np.mean(cols == rows)),
    "init_to_trained_cosine": float(np.mean(np.diag(_cross_cosine(a["weights_first"], a["weights_last"])))),
    "edge_jaccard": float(len(ea & eb) / max(1, len(ea | eb))),
    "runs": [{k: s.get(k) for k in ("edges", "components", "largest_component", "repeated_units")} for s in (sa, sb)],
  }


def _cross_cosine(A, B) -> np.ndarray:
  A = np.asarray(A, np.float64)
  B = np.asarray(B, np.float64)
  A = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-30)
  B = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-30)
  return A @ B.T


# ----------------------------------------------------------------------------- stage bookkeeping


def run_stages(rep: Reproduction, stages: list[str], progress=print) -> dict[str, dict]:
  """Runs each stage not already finished with its configuration; returns {stage: record}."""
  records, begin, ran = {}, time.time(), 0
  for index, stage in enumerate(stages):
    cfg = rep.stage_config(stage)
    path = rep.stage_path(stage)
    if os.path.exists(path):
      record = storage.read_json(path)
      if record["config"] != cfg:
        raise checkpoint.ConfigMismatch(
          f"{path} was computed with another configuration (profile, dataset, seeds or sizes) than this run asks; "
          f"use a new --workdir for this configuration, or the same flags as before")
      progress(f"[{index + 1}/{len(stages)}] {stage}: finished before, reused ({record['seconds']:.0f}s then)")
      records[stage] = record
      continue
    eta = ""
    if ran:  # the mean time of the stages run so far in this call, times the stages left
      eta = f", ETA for the rest ~{console.duration((time.time() - begin) / ran * (len(stages) - index))}"
    progress(f"[{index + 1}/{len(stages)}] {stage}: running{eta}")
    start = time.time()
    result = rep.run_stage(stage)
    record = {"config": cfg, "result": result, "seconds": time.time() - start,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    storage.write_json(path, record)
    progress(f"[{index + 1}/{len(stages)}] {stage}: done in {console.duration(record['seconds'])}")
    records[stage] = record
    ran += 1
  return records


def finished_stages(root: str) -> dict[str, dict]:
  """Every stage record in the workdir (the page shows them all, also those of earlier calls)."""
  folder = os.path.join(root, "stages")
  return {s: storage.read_json(os.path.join(folder, f"{s}.json")) for s in STAGES
          if os.path.exists(os.path.join(folder, f"{s}.json"))}


def provenance(rep: Reproduction, stages: list[str], wall: float) -> dict:
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip())
  except (OSError, subprocess.CalledProcessError):  # a copy without .git: the commit its maker names, if any
    commit, dirty = os.environ.get("REDUNDANCY_JAX_COMMIT", "unknown (not a git checkout)"), False
  import flax
  return {
    "profile": rep.profile_name, "profile_note": rep.profile.note, "command": " ".join(sys.argv),
    "stages_this_call": stages, "wall_seconds_this_call": wall, "commit": commit, "uncommitted_changes": dirty,
    "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
    "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                 "numpy": np.__version__},
    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    "written": time.strftime("%Y-%m-%d %H:%M:%S"),
  }


def related_results(folders: list[str], root: str) -> dict:
  """{experiment: results, figure copied into <root>/figures, source folder} for each folder holding a
  related-work script's results.json (the experiment named by its config's keys)."""
  found = {}
  for folder in folders:
    path = os.path.join(folder, "results.json")
    if not os.path.exists(path):
      continue
    results = storage.read_json(path)
    cfg = results.get("config", {})
    name = ("lottery" if "rounds" in cfg else "clustering" if "ks" in cfg else
            "teacher_student" if "student_units" in cfg else "width" if "widths" in cfg else None)
    figure = os.path.join(folder, "figure.png")
    if name is None or not os.path.exists(figure):
      continue
    target = os.path.join(root, "figures", f"related_{name}.png")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(figure, "rb") as src:
      data_bytes = src.read()
    storage.atomic_write(target, lambda f: f.write(data_bytes))
    found[name] = {"results": results, "figure": os.path.relpath(target, root), "source": folder}
  return found


def run() -> None:
  stages = choose_stages(FLAGS.stages)
  profile = PROFILES[FLAGS.profile]
  seeds = parse_seeds(FLAGS.seeds, profile)
  datasets = choose_datasets(FLAGS.dataset, FLAGS.data_dir)
  rep = Reproduction(FLAGS.workdir, FLAGS.profile, datasets, seeds, FLAGS.data_dir)
  for stage in stages:
    rep.stage_config(stage)  # every config resolves (names, data choices) before anything runs
  names = sorted({d["dataset"] + (" (bundled subset)" if d["data_source"] == "bundled" else "") for d in datasets.values()})
  print(f"reproducing the report ({FLAGS.profile} profile: {profile.note}) on {', '.join(names)} "
        f"in {FLAGS.workdir}: {len(stages)} stage(s)")
  begin = time.time()
  run_stages(rep, stages)
  page = report.write(FLAGS.workdir, finished_stages(FLAGS.workdir), provenance(rep, stages, time.time() - begin),
                      related_results(FLAGS.related, FLAGS.workdir))
  print(f"wrote {page} and {os.path.join(FLAGS.workdir, 'report.md')} in {console.duration(time.time() - begin)}")


if __name__ == "__main__":
  app.run_app(run)

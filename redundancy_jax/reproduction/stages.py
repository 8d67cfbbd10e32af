"""The report's evidence rebuilt as stages, each the computation of one experiment's command with the
profile's preset of that command's config (`profiles.py`), recorded with that config:

  rep = Reproduction(ReproduceConfig(profile="quick"))
  records = run_stages(rep, ["lenet.train", "lenet.prune"])      # {stage: {"config", "result", ...}}

Layout of the workdir: runs/<model>[_resampled]/ (training runs), related/<name>/ (the related-work
experiments), stages/<stage>.json (each stage's configuration, result and wall time, written atomically
when it ends), figures/ (PNG and PDF, the interactive viewers), and the page (`page.write`). A stage
that finished with the same configuration is reused; one that finished with another is an error.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import subprocess
import time
from typing import Callable

import jax
import numpy as np

from redundancy_jax.analyses import classes, criteria, dynamics, dynamics_run, force_layout, prune_sweep, subspace, subspace_table
from redundancy_jax.core import config, console, data, storage, train
from redundancy_jax.core.runs import ConfigMismatch, Run, folder_lock
from redundancy_jax.models import topology
from redundancy_jax.related import clustering, lottery, teacher_student, width
from redundancy_jax.reproduction import page, profiles
from redundancy_jax.reproduction.profiles import DYNAMICS_LAYER, PRUNED, ReproduceConfig
from redundancy_jax.core.errors import MissingFile

RELATED_RUNS = {"lottery": lottery.run, "clustering": clustering.run, "teacher_student": teacher_student.run,
                "width": width.run}


def last_conv(net) -> str:
  return [l.name for l in topology.of(net) if l.kind == "conv"][-1]


def architecture(net) -> list[dict]:
  """The layers as Figure 1 describes them: a plan's entries (kind, features, pooling) for the report's
  models, else each traced layer's kind and units."""
  plan = getattr(net.module, "plan", None)
  if plan is not None:
    return [dataclasses.asdict(layer) for layer in plan]
  return [{"name": l.name, "kind": l.kind, "features": l.units, "before": "", "after": "", "output": l.classifier}
          for l in topology.of(net)]


def spectrum_brief(summary: dict) -> dict:
  """What the claims need of `spectral.summarize`'s output."""
  fit, sens = summary["fit"], summary["sensitivity"]
  return {"m": summary["m"], "n": summary["n"], "Q": summary["Q"], "spikes": int(fit["spikes"]),
          "spikes_tw": int(fit["spikes_tw"]), "lambda_plus": float(fit["lambda_plus"]),
          "spikes_second_fit": int(sens["spikes_second_fit"]), "near_edge": int(sens["near_edge"]),
          "elbow": summary.get("elbow"), "kept_norm_percent": summary.get("kept_norm_percent")}


class Reproduction:
  """The stages of one reproduction in one workdir; each stage has a config (`stage_config`) and a
  computation returning a JSON-ready result."""

  def __init__(self, cfg: ReproduceConfig, log: Callable[[str], None] = print):
    config.check_choices(cfg)
    self.cfg, self.profile, self.log = cfg, profiles.PROFILES[cfg.profile], log
    self.root = cfg.workdir
    self.seeds = profiles.parse_seeds(cfg.seeds, self.profile)
    self.datasets = profiles.choose_datasets(cfg.dataset, cfg.data_dir)
    self.figures = os.path.join(self.root, "figures")
    self._data = {}

  # --- configuration: each stage's is the config of the command that computes it

  def train_config(self, model: str, resampled: bool = False):
    return profiles.training_config(self.profile, model, self.seeds[model], self.datasets, self.cfg.data_dir,
                                    self.cfg.num_devices, resampled)

  def run_dir(self, model: str, resampled: bool = False) -> Run:
    return Run(os.path.join(self.root, "runs", model + ("_resampled" if resampled else "")))

  def command_config(self, stage: str):
    """The config of the command whose computation the stage runs, as the profile presets it."""
    group, kind = stage.split(".")
    if group == "related":
      return profiles.related_config(kind, self.profile, self.root)
    train_cfg, workdir, p = self.train_config(group), self.run_dir(group).workdir, self.profile
    if kind == "train":
      return train_cfg
    if kind == "classes":
      cfg = classes.ClassesConfig()
      if p.classes.get(group):
        cfg = config.preset(cfg, p.classes[group])
      train_cfg = dataclasses.replace(cfg.train, model=group, data_dir=self.cfg.data_dir, **self.datasets[group])
      return dataclasses.replace(cfg, train=train_cfg, counts=profiles.CLASS_COUNTS.get(group, cfg.counts),
                                 workdir=os.path.join(self.root, "runs", f"classes_{group}"))
    if kind == "prune":
      return prune_sweep.PruneSweepConfig(train=train_cfg, workdir=workdir, layer=PRUNED[group],
                                          max_examples=p.examples, level_step=p.level_step,
                                          random_seeds=p.random_seeds)
    if kind in ("dynamics", "resample"):
      layout = force_layout.LayoutParams(ticks=p.ticks)
      return dynamics_run.DynamicsRunConfig(
        train=train_cfg, workdir=workdir, graph=dynamics.DynamicsConfig(layer=DYNAMICS_LAYER[group], layout=layout),
        num_examples=min(1000, p.examples or 1000), max_frames=p.max_frames,
        compare_workdir=self.run_dir(group, resampled=True).workdir if kind == "resample" else None)
    layers = ("fc1", "conv16") if group == "vgg19" else ("fc1",)
    return subspace.SubspaceConfig(train=train_cfg, workdir=workdir, layer=layers, num_ranks=p.num_ranks,
                                   max_examples=p.examples)

  def stage_config(self, stage: str) -> dict:
    """Everything the stage's result depends on (compared when a finished stage is reused): the command's
    config, and for a pruning stage the criteria its 'all' stands for today."""
    cfg = {"stage": stage, "config": config.to_json(self.command_config(stage))}
    if stage.endswith(".prune"):
      cfg["criteria"] = list(criteria.names())
    if stage.endswith(".resample"):
      cfg["resampled"] = self.train_config(stage.split(".")[0], resampled=True).to_json()
    return cfg

  def stage_path(self, stage: str) -> str:
    return os.path.join(self.root, "stages", f"{stage}.json")

  # --- shared by the stages

  def dataset(self, cfg) -> data.Dataset:
    key = (cfg.dataset, cfg.data_source, cfg.data_dir, cfg.seed, cfg.val_size)
    if key not in self._data:
      self._data[key] = data.from_config(cfg)
    return self._data[key]

  def trained(self, model: str, replica: int = 0, resampled: bool = False):
    """(module, variables of one replica, dataset, config) of a finished training stage."""
    run_ = self.run_dir(model, resampled)
    if not run_.is_trained():
      raise MissingFile(f"{run_.workdir} holds no trained model: run the stage {model}.train first "
                              f"(--stages={model} runs every stage of {model})")
    return run_.trained(replica, dataset=self.dataset(self.train_config(model, resampled)))

  def figure(self, name: str) -> str:
    os.makedirs(self.figures, exist_ok=True)
    return os.path.join(self.figures, name)

  def relative(self, path: str) -> str:
    return os.path.relpath(path, self.root)

  # --- the stages

  @staticmethod
  def training(result: dict) -> dict:
    """What the provenance's training column shows of a training stage's result."""
    return {k: result[k] for k in ("steps", "recipe_steps", "seeds", "steps_per_second")}

  def train_stage(self, model: str, resampled: bool = False) -> dict:
    cfg = self.train_config(model, resampled)
    results = train.train(cfg, self.run_dir(model, resampled).workdir, dataset=self.dataset(cfg), log=self.log)
    if "stopped_at_epoch" in results:
      raise console.Interrupted("training stopped early")
    module, variables, _, _ = self.trained(model, resampled=resampled)
    conv = sum(int(np.size(leaf)) for l in topology.of(module) if l.kind == "conv"
               for leaf in jax.tree.leaves(topology.get(variables["params"], l.name.split("/"))))
    keep = ("test_accuracy", "test_accuracy_mean", "test_accuracy_std", "best_step", "best_val_loss",
            "steps_per_second", "devices", "epochs", "parameters", "dataset")
    return {**{k: results[k] for k in keep}, "conv_parameters": conv, "steps": cfg.steps,
            "recipe_steps": config.recipe(model).steps, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
            "learning_rate": cfg.learning_rate, "width": cfg.width, "seeds": cfg.num_seeds,
            "layers": architecture(module)}

  def prune_stage(self, model: str) -> dict:
    from redundancy_jax.plots import pruning as pruning_plots

    cfg = self.command_config(f"{model}.prune")
    module, variables, ds, trained_cfg = self.trained(model)
    x, y = ds.test_x[: cfg.max_examples], ds.test_y[: cfg.max_examples]
    quiet = lambda s: self.log("  " + s)
    train_data = prune_sweep.criteria_data(ds, cfg)
    layers, _ = prune_sweep.sweep_layers(module, variables, cfg.layer, x, y, cfg, trained_cfg.seed, quiet, train_data)
    results = {"config": {"model": model, "split": "test", "examples": int(len(y)),
                          "criteria_examples": int(len(train_data[1]))}, "dataset": ds.describe(), "layers": layers}
    figure = pruning_plots.save_figure(results, self.figure(f"figure2_{model}"), loss=True)
    return {**results, "figure": self.relative(figure[0])}

  def _analyse(self, run_: Run, cfg, threshold=None) -> dict:
    graph = dataclasses.replace(cfg.graph, threshold=threshold)
    return dynamics_run.analyse_run(run_, cfg, graph, log=lambda s: None)

  def dynamics_stage(self, model: str) -> dict:
    from redundancy_jax.plots import dynamics as dynamics_plots

    cfg = self.command_config(f"{model}.dynamics")
    result = self._analyse(self.run_dir(model), cfg)
    kernel_shape = np.shape(topology.kernel(self.trained(model)[1], cfg.graph.layer))
    control = dynamics.init_control(kernel_shape, cfg.graph.sigma, result["threshold"])
    runs = [(model, result)]
    name = f"{model}_{cfg.graph.layer}"
    figure = dynamics_plots.save_init_vs_converged(runs, self.figure(f"dynamics_{name}.png"))
    page = dynamics_plots.write_page(self.figure(f"dynamics_{name}.html"), runs)
    return {"layer": cfg.graph.layer, **dynamics.summary(result), "control": control,
            "figure": self.relative(figure[0]), "viewer": self.relative(page)}

  def resample_stage(self, model: str) -> dict:
    """Figure 5: the run with a re-sampled classifier against the main run, replica 0 of each."""
    from redundancy_jax.plots import dynamics as dynamics_plots

    trained = self.train_stage(model, resampled=True)
    cfg = self.command_config(f"{model}.resample")
    module = self.trained(model)[0]
    out = {"layers": {}, "training": self.training(trained)}
    for layer in (last_conv(module), "fc1"):
      layer_cfg = dataclasses.replace(cfg, graph=dataclasses.replace(cfg.graph, layer=layer))
      a = self._analyse(self.run_dir(model), layer_cfg)
      b = self._analyse(self.run_dir(model, resampled=True), layer_cfg, threshold=a["threshold"])
      runs = [("main run", a), ("classifier re-sampled", b)]
      figure = dynamics_plots.save_init_vs_converged(runs, self.figure(f"figure5_{model}_{layer}.png"))
      page = dynamics_plots.write_page(self.figure(f"figure5_{model}_{layer}.html"), runs)
      out["layers"][layer] = {**dynamics.compare_runs(a, b), "figure": self.relative(figure[0]),
                              "viewer": self.relative(page)}
    return out

  def subspace_stage(self, model: str) -> dict:
    from redundancy_jax.plots import spectral as spectral_plots

    cfg = self.command_config(f"{model}.subspace")
    run_ = self.run_dir(model)
    module, variables, ds, trained_cfg = self.trained(model)
    analyses = subspace.analyze_layers(run_, module, variables, ds, cfg.layer, cfg, log=lambda s: None)
    title = f"{model} on {data.label(ds.describe())}"
    esd = spectral_plots.save(
      spectral_plots.esd_figure([(l, a["init"], a["trained"]) for l, a in analyses.items()], 2, title),
      self.figure(f"esd_{model}"))
    residual = spectral_plots.save(
      spectral_plots.residuals_figure([(l, a["trained"], a["init"], a["update"]) for l, a in analyses.items()],
                                      2, title), self.figure(f"residuals_{model}"))
    x, y = ds.test_x[: cfg.max_examples], ds.test_y[: cfg.max_examples]
    row = subspace_table.replicas_row(run_, module, ds, trained_cfg, "fc1", x, y, log=lambda s: None)
    brief = lambda a: {"layer": a["layer"], "init": spectrum_brief(a["init"]), "trained": spectrum_brief(a["trained"]),
                       "control": subspace.init_control(a["kernel_shape"])}
    return {"layers": {l: brief(a) for l, a in analyses.items()}, "row": row,
            "figures": [self.relative(esd[0]), self.relative(residual[0])]}

  def classes_stage(self, model: str) -> dict:
    """The open question's run of `model` (`classes.run`); the page keeps its summary, verdicts and figure."""
    from redundancy_jax.plots import classes as classes_plots, save

    cfg = self.command_config(f"{model}.classes")
    results = classes.run(cfg, log=lambda s: self.log("  " + s))
    figure = save(classes_plots.figure(results), self.figure(f"classes_{model}"))
    keep = ("title", "steps", "recipe_steps", "dataset", "layers", "verdict_layer", "summary", "headlines")
    training = {"steps": results["steps"], "recipe_steps": results["recipe_steps"], "seeds": len(results["replicas"]),
                "steps_per_second": Run(cfg.workdir).results()["steps_per_second"]}
    return {**{k: results[k] for k in keep}, "model": model, "figure": self.relative(figure[0]), "training": training}

  def related_stage(self, name: str) -> dict:
    """A related-work experiment run whole by its own `run`; the stage keeps its verdicts and figure."""
    cfg = self.command_config(f"related.{name}")
    results = RELATED_RUNS[name](cfg, log=lambda s: self.log("  " + s))
    figure = os.path.join(cfg.workdir, "figure.png")
    return {"experiment": results["experiment"], "headlines": results["headlines"], "settings": results["settings"],
            "figure": self.relative(figure), "workdir": self.relative(cfg.workdir), "data": related_data(cfg, results)}

  def run_stage(self, stage: str) -> dict:
    group, kind = stage.split(".")
    if group == "related":
      return self.related_stage(kind)
    if kind == "train":
      return self.train_stage(group)
    return getattr(self, f"{kind}_stage")(group)


def related_data(cfg, results: dict) -> list[str]:
  """The data a related-work experiment ran on, one `data.label` each, from its results (and, for the
  width experiment, those of its training runs)."""
  name = results["experiment"]
  if name == "teacher_student":
    return [f"Gaussian inputs, generated online (N = {cfg.input_dim})"]
  if name == "clustering":
    described = [results["xord"]["dataset"], results["conv2"]["dataset"]]
  elif name == "width":
    described = [Run(os.path.join(cfg.workdir, f"h{h}")).results()["dataset"] for h in cfg.check().widths]
  else:
    described = [results["dataset"]]
  return list(dict.fromkeys(data.label(d) for d in described))


def run_stages(rep: Reproduction, stages: list[str], progress: Callable[[str], None] = print) -> dict[str, dict]:
  """Runs each stage not already finished with its configuration; returns {stage: record}. Every
  stage's configuration is checked against its record before any stage runs."""
  configs = {stage: rep.stage_config(stage) for stage in stages}
  recompute = set()
  for stage, cfg in configs.items():
    path = rep.stage_path(stage)
    recorded = storage.read_json(path)["config"] if os.path.exists(path) else cfg
    if recorded == cfg:
      continue
    if _without_analysis_options(recorded) == _without_analysis_options(cfg):
      recompute.add(stage)  # the same run, analysed with other options (e.g. more criteria): computed again
      continue
    raise ConfigMismatch(
      f"{path} was computed with another configuration (profile, dataset, seeds or sizes) than this run asks; "
      f"use a new --workdir for this configuration, or the same flags as before")
  records = {}
  for index, stage in enumerate(stages):
    path = rep.stage_path(stage)
    if stage in recompute:
      progress(f"[{index + 1}/{len(stages)}] {stage}: finished before with other analysis options "
               f"({', '.join(ANALYSIS_OPTIONS)}); computing it again")
    elif os.path.exists(path):
      record = storage.read_json(path)
      progress(f"[{index + 1}/{len(stages)}] {stage}: finished before, reused ({record['seconds']:.0f}s then)")
      records[stage] = record
      continue
    progress(f"[{index + 1}/{len(stages)}] {stage}: running")
    start = time.time()
    result = rep.run_stage(stage)
    record = {"config": configs[stage], "result": result, "seconds": time.time() - start,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    storage.write_json(path, record)
    progress(f"[{index + 1}/{len(stages)}] {stage}: done in {console.duration(record['seconds'])}")
    records[stage] = record
  return records


# Options of an analysis, not of the run it analyses: a stage recorded with others is computed again
# (its training reused), not refused. The criteria: adding one to the registry must not invalidate a workdir.
ANALYSIS_OPTIONS = ("criteria", "criteria_examples")


def _without_analysis_options(stage_config: dict) -> dict:
  cfg = {k: v for k, v in stage_config.items() if k not in ANALYSIS_OPTIONS}
  cfg["config"] = {k: v for k, v in cfg.get("config", {}).items() if k not in ANALYSIS_OPTIONS}
  return cfg


def finished_stages(root: str) -> dict[str, dict]:
  """Every stage record in the workdir (the page shows them all, also those of earlier calls)."""
  folder = os.path.join(root, "stages")
  return {s: storage.read_json(os.path.join(folder, f"{s}.json")) for s in profiles.STAGES
          if os.path.exists(os.path.join(folder, f"{s}.json"))}


COMMAND = "python -m experiments.reproduce"


def command_line(cfg: ReproduceConfig) -> str:
  """The command that makes `cfg`, every option written out (those left unset, None or empty, omitted)."""
  given = [f"--{f.name}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
           for f in dataclasses.fields(cfg) if (v := getattr(cfg, f.name)) not in (None, ())]
  return shlex.join([*COMMAND.split(), *given])


def provenance(rep: Reproduction, stages: list[str], wall: float, argv: list[str] | None = None) -> dict:
  """What made the page: the command (as typed, when `argv` is given, and with every option), the code,
  the machine, the stages run by this call and its wall time."""
  import flax
  import jax

  try:
    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                            cwd=here).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, cwd=here).stdout.strip())
  except (OSError, subprocess.CalledProcessError):  # a copy without .git: the commit its maker names, if any
    commit, dirty = os.environ.get("REDUNDANCY_JAX_COMMIT", "unknown (not a git checkout)"), False
  return {
    "profile": rep.cfg.profile, "profile_note": rep.profile.note, "command": command_line(rep.cfg),
    "typed": shlex.join([*COMMAND.split(), *argv[1:]]) if argv is not None else None,
    "stages_this_call": stages, "wall_seconds_this_call": wall, "commit": commit, "uncommitted_changes": dirty,
    "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
    "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                 "numpy": np.__version__},
    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
    "written": time.strftime("%Y-%m-%d %H:%M:%S"),
  }


def run(cfg: ReproduceConfig, log: Callable[[str], None] = print, argv: list[str] | None = None) -> str:
  """Runs the selected stages (each once; finished ones reused) and writes the page from every stage
  record in the workdir; returns the page's path. `argv`: the command line as typed (sys.argv), recorded
  in the provenance."""
  stages = profiles.choose_stages(cfg.stages, profiles.PROFILES.get(cfg.profile))  # a bad profile: Reproduction says
  rep = Reproduction(cfg, log)
  with folder_lock(cfg.workdir):
    for stage in stages:
      rep.command_config(stage)  # every config resolves (names, data choices) before anything runs
    names = sorted({d["dataset"] + (" (bundled subset)" if d["data_source"] == "bundled" else "")
                    for d in rep.datasets.values()})
    related = " (the related work on its own data, stated on the page)" if any(
      s.startswith("related.") for s in stages) else ""
    log(f"reproducing the report ({cfg.profile} profile: {rep.profile.note}) with the models on {', '.join(names)}"
        f"{related} in {cfg.workdir}: {len(stages)} stage(s)")
    begin = time.time()
    run_stages(rep, stages, log)
    path = page.write(cfg.workdir, finished_stages(cfg.workdir), provenance(rep, stages, time.time() - begin, argv))
  log(f"wrote {path} and {os.path.join(cfg.workdir, 'report.md')} in {console.duration(time.time() - begin)}")
  return path

"""Subspace analysis of a trained network (DEFINITIONS.md section 4, report section 3.3): the accuracy on
data of low-rank replacements of a layer, batched over ranks through `variants.py`, the whole analysis
of one layer (its spectra from `spectral.py` plus those accuracies), one seed's quantities of the
report's Figure 8, and the command built on them (the Figure 8 table and its command: `subspace_table.py`).

  acc = rank_sweep(model, variables, "fc1", x, y, ks, init_params=p0)   # every k, batched
  result = analyze_layer(model, variables, p0, "fc1", x, y)             # JSON-ready
  row = low_rank_replacement(model, variables, p0, "fc1", x, y)         # one seed of Figure 8
  run(SubspaceConfig(...))                                            # python -m experiments.subspace
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.analyses.spectral import (
  SpectralError, check_matrix, check_rank, elbow, glorot_variance, kept_norm, residuals, summarize, truncate,
)
from redundancy_jax.analyses.units import init_draws, kernel_from_units, unit_matrix
from redundancy_jax.core import config, data, storage, train, variants
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.runs import Run, default_workdir
from redundancy_jax import models
from redundancy_jax.models import Network, topology
from redundancy_jax.core.errors import BadOption


def rank_grid(p: int, num: int = 48, include: Sequence[int] = ()) -> np.ndarray:
  """Ranks 1..p-1 for the accuracy curve: all of them when `num` <= 0 or p - 1 <= num, else about `num`
  geometrically spaced ones, plus `include`."""
  if p < 2:
    raise SpectralError(f"no rank 1..min(m, n)-1 exists for min(m, n) = {p}")
  if num <= 0 or p - 1 <= num:
    grid = np.arange(1, p)
  else:
    grid = np.unique(np.round(np.geomspace(1, p - 1, num)).astype(int))
  return np.unique(np.concatenate([grid, np.asarray(include, int)])).astype(np.int32)


def _factor_inputs(net, cut, variables, factors, captured):
  """`prepare` of a dense layer: per mode, its pre-activation with the base weights (x base^T + b) and
  its input on the right singular vectors (x Vt^T), computed once per data chunk and shared by every k."""
  x = captured[0]
  x = x.reshape(-1, x.shape[-1])
  group = topology.get(variables["params"], cut.layer.split("/"))
  bias = group["bias"] if "bias" in group else 0.0
  return jnp.einsum("nj,dmj->dnm", x, factors["base"]) + bias, jnp.einsum("nj,dpj->dnp", x, factors["Vt"])


def _factorized_rank(net, cut, variables, factors, inputs, y, variant, tail):
  """`score` of (mode, k) for a dense layer: z_k = x base^T + b + ((x Vt^T) * s_k) U^T as the layer's
  output, then the rest of the network (`tail`). W_k is never formed."""
  mode, k = variant
  z0, A = inputs[0][mode], inputs[1][mode]
  s = factors["s"][mode]
  z = z0 + (A * jnp.where(jnp.arange(s.shape[0]) < k, s, 0.0)) @ factors["U"][mode].T
  return variants.loss_and_correct(tail(z), y)


def _replaced_rank(net, cut, variables, factors, inputs, y, variant, tail):
  """`score` of (mode, k) for any layer: its kernel replaced by base + truncate(U, s, Vt, k), and the
  network run on from what reads the kernel (`tail`)."""
  del net, inputs
  mode, k = variant
  kernel = topology.kernel(variables, cut.layer)
  W = factors["base"][mode] + truncate(factors["U"][mode], factors["s"][mode], factors["Vt"][mode], k)
  return variants.loss_and_correct(tail(kernel_from_units(W, kernel.shape)), y)


def rank_sweep(
  model: Network,
  variables: Mapping,
  layer: str,
  x,
  y,
  ks,
  *,
  init_params: Mapping | None = None,
  data_chunk: int = 500,
  k_chunk: int = 16,
  factorized: bool | None = None,
) -> dict[str, np.ndarray]:
  """Accuracy on (x, y) with `layer`'s W replaced by W_k ("low_rank") and, given the initial
  parameters, by W0 + P_k (W - W0) ("project_update"), for every k of `ks`; "full": unchanged.

  Batched through `variants.evaluate` like the pruning sweep: per data chunk the network up to the
  layer before runs once, then every (mode, k) runs vmapped in batches of `k_chunk`. For a dense layer
  (`factorized`, default automatic) W_k is never formed: its input is projected on the right singular
  vectors once and each k only masks singular values.
  """
  info = topology.check(model, layer, error=SpectralError)
  W = check_matrix(unit_matrix(variables, layer), layer)
  ks = np.asarray(ks)
  check_rank(ks, W.shape, layer)
  modes = {"low_rank": (jnp.zeros_like(W), *jnp.linalg.svd(W, full_matrices=False))}
  if init_params is not None:
    W0 = jnp.asarray(unit_matrix(init_params, layer))
    update = check_matrix(W - W0, f"{layer} update W - W0")
    modes["project_update"] = (W0, *jnp.linalg.svd(update, full_matrices=False))
  factors = {name: jnp.stack([f[i] for f in modes.values()]) for i, name in enumerate(("base", "U", "s", "Vt"))}
  if factorized is None:
    factorized = info.kind == "dense"
  if factorized:
    spec = variants.Pass(variants.Cut("output", layer, capture=(layer,)), _factor_inputs, _factorized_rank, k_chunk,
                         data_chunk)
  else:
    spec = variants.Pass(variants.Cut("kernel", layer), variants.keep_inputs, _replaced_rank, k_chunk, data_chunk)
  mode_V = np.repeat(np.arange(len(modes), dtype=np.int32), len(ks))
  k_V = np.tile(ks.astype(np.int32), len(modes))
  _, correct = variants.evaluate(model, variables, x, y, spec, (mode_V, k_V), factors)
  accuracy = np.asarray(correct).reshape(len(modes), len(ks)) / len(y)
  full = variants.loss_and_accuracy(model, variables, x, y, data_chunk=data_chunk)[1]
  return {"ks": ks, "full": full, **{name: accuracy[i] for i, name in enumerate(modes)}}


def analyze_layer(
  model: Network,
  variables: Mapping,
  init_params: Mapping,
  layer: str,
  x,
  y,
  *,
  num_ranks: int = 48,
  **sweep_options,
) -> dict:
  """One layer's subspace analysis, JSON-ready: spectra of the initial and the trained W against
  Marchenko-Pastur, the residual curves of W and of the update W - W0 with their elbows, and the
  accuracy on (x, y) for a grid of ranks (`rank_grid(p, num_ranks)` plus both elbows) with W -> W_k
  and W -> W0 + P_k(W - W0). Without `init_params` (variables loaded from a file): W's spectrum, elbow
  and W -> W_k only.

  `a` is the unchanged network's accuracy, `a_proj` and `a_project_update` those at W's elbow k, and
  `a_project_update_at_update_elbow` Nagarajan-Kolter's at the update's own elbow.
  """
  kernel_shape = np.shape(topology.kernel(variables, layer))
  var = glorot_variance(kernel_shape)
  W = unit_matrix(variables, layer)
  trained = summarize(W, init_var=var, layer=layer)
  out = {"layer": layer, "kernel_shape": list(kernel_shape), "trained": trained}
  if init_params is None:  # trained variables loaded without their initialisation: no update W - W0
    if "elbow" in trained:
      ks = rank_grid(min(W.shape), num_ranks, include=[trained["elbow"]])
      sweep = rank_sweep(model, variables, layer, x, y, ks, **sweep_options)
      out["sweep"] = jax.tree.map(lambda a: np.asarray(a).tolist(), sweep)
      out.update(a=sweep["full"], a_proj=float(sweep["low_rank"][int(np.searchsorted(ks, trained["elbow"]))]))
    return out
  W0 = unit_matrix(init_params, layer)
  out["init"] = summarize(W0, init_var=var, layer=f"{layer} at initialisation")
  if "elbow" not in trained:
    return out  # a single unit or input: no rank to choose
  r_update = residuals(jnp.asarray(W) - jnp.asarray(W0), layer=f"{layer} update W - W0")
  k, k_update = trained["elbow"], int(elbow(r_update))
  out["update"] = {"residuals": np.asarray(r_update).tolist(), "elbow": k_update,
                   "kept_norm_percent": float(100 * kept_norm(r_update, k_update))}
  ks = rank_grid(min(W.shape), num_ranks, include=[k, k_update])
  sweep = rank_sweep(model, variables, layer, x, y, ks, init_params=init_params, **sweep_options)
  at = lambda rank: int(np.searchsorted(sweep["ks"], rank))
  out["sweep"] = jax.tree.map(lambda a: np.asarray(a).tolist(), sweep)
  out.update(
    a=sweep["full"], a_proj=float(sweep["low_rank"][at(k)]), a_project_update=float(sweep["project_update"][at(k)]),
    a_project_update_at_update_elbow=float(sweep["project_update"][at(k_update)]),
  )
  return out


def init_control(kernel_shape, draws: int = 16) -> dict:
  """The spike counts and elbow of `draws` layers of `kernel_shape` drawn by the models' initialiser:
  {"spikes", "spikes_tw", "elbow": [mean, std] over draws}, the control of a claim about a trained layer."""
  var = glorot_variance(kernel_shape)
  briefs = [summarize(W, init_var=var) for W in init_draws(kernel_shape, draws)]
  values = {"spikes": [b["fit"]["spikes"] for b in briefs], "spikes_tw": [b["fit"]["spikes_tw"] for b in briefs],
            "elbow": [b.get("elbow", 0) for b in briefs]}
  return {k: [float(np.mean(v)), float(np.std(v))] for k, v in values.items()}


def low_rank_replacement(model: Network, variables: Mapping, init_params: Mapping, layer: str, x, y,
                         **sweep_options) -> dict:
  """One trained replica's entry of the report's Figure 8: k = the elbow of W's residual curve,
  100 ||W_k||_F / ||W||_F, the accuracy a, a_proj (W -> W_k) and a_NK (W -> W0 + P_k(W - W0)) with the
  drops a - a_proj and a - a_NK in points, and k_update, the elbow of the update W - W0, with a_NK there."""
  W, W0 = unit_matrix(variables, layer), unit_matrix(init_params, layer)
  r = residuals(W, layer=layer)
  k = int(elbow(r))
  k_update = int(elbow(residuals(jnp.asarray(W) - jnp.asarray(W0), layer=f"{layer} update W - W0")))
  ks = sorted({k, k_update})
  sweep = rank_sweep(model, variables, layer, x, y, ks, init_params=init_params, **sweep_options)
  a = sweep["full"]
  a_proj, a_nk = float(sweep["low_rank"][ks.index(k)]), float(sweep["project_update"][ks.index(k)])
  a_nk_update = float(sweep["project_update"][ks.index(k_update)])
  return {
    "k": k, "kept_norm_percent": float(100 * kept_norm(r, k)), "a": a, "a_proj": a_proj, "a_project_update": a_nk,
    "drop": 100 * (a - a_proj), "drop_project_update": 100 * (a - a_nk), "k_update": k_update,
    "a_project_update_at_update_elbow": a_nk_update, "drop_project_update_at_update_elbow": 100 * (a - a_nk_update),
    "neurons": int(W.shape[0]), "inputs": int(W.shape[1]),
  }


# ----------------------------------------------------------------------------- the commands


@dataclasses.dataclass(frozen=True)
class SubspaceConfig:
  """`python -m experiments.subspace`."""

  train: TrainConfig = option(TrainConfig(), "The model: reused from the workdir, or trained there first.")
  workdir: str | None = option(None, "Run folder (default runs/<model>); outputs go to <workdir>/subspace/<layer>.")
  layer: tuple[str, ...] = option(("fc1",), "Layers to analyse, or 'all' for every layer of the model "
                                            "({layers}).")
  replica: int = option(0, "Which trained replica (seed index) to analyse.")
  max_examples: int | None = option(None, "Use at most this many test images.")
  num_ranks: int = option(48, "Ranks k in the accuracy curve (geometric grid plus the elbow); 0: every k.")
  eval_chunk: int = option(500, "Test images per batched evaluation step.")
  rank_chunk: int = option(16, "Ranks evaluated together (vmapped) per step.")
  variables: str | None = option(None, "Analyse these trained variables instead of training: an orbax checkpoint "
                                       "folder, a flax.serialization msgpack file or an .npz of '/'-joined paths "
                                       "(without their initialisation: no update W - W0).")


def run(cfg: SubspaceConfig, log: Callable[[str], None] = print) -> dict:
  """Finds or trains the model, analyses the layers, writes results and figures; returns the results."""
  from redundancy_jax.plots import spectral as plots  # matplotlib: only where figures are drawn

  run_ = Run(cfg.workdir or default_workdir(cfg.train))
  planned = cfg.train.resolve() if cfg.variables else run_.resolve(cfg.train)
  layers = chosen_layers(models.from_config(planned), cfg.layer)  # before anything trains
  if not 0 <= cfg.replica < planned.num_seeds:
    raise BadOption(f"--replica={cfg.replica} is outside 0..{planned.num_seeds - 1} ({planned.num_seeds} trained)")
  with run_.lock():
    model, variables, dataset, trained_cfg = train.find_or_train(run_, cfg.train, log, variables=cfg.variables)
    if cfg.replica and cfg.variables is None:
      model, variables, dataset, trained_cfg = run_.trained(cfg.replica, dataset)
    out_dir = run_.path("subspace", ",".join(cfg.layer))
    settings = {"layer": list(cfg.layer), "replica": cfg.replica, "num_ranks": cfg.num_ranks,
                "examples": len(dataset.test_y[: cfg.max_examples]), "eval_chunk": cfg.eval_chunk,
                "rank_chunk": cfg.rank_chunk}
    storage.write_json(os.path.join(out_dir, "config.json"), {**settings, "training": trained_cfg.to_json()})
    analyses = analyze_layers(run_, model, variables, dataset, layers, cfg, log)
    results = {"experiment": "subspace", "model": trained_cfg.model, "workdir": run_.workdir,
               "dataset": dataset.describe(), **settings, "layers": analyses}
    storage.write_json(os.path.join(out_dir, "results.json"), results)
    ncols = 2 if len(layers) == 1 else 4
    title = f"{trained_cfg.model} (replica {cfg.replica}) on {data.label(results['dataset'])}"
    plots.save(plots.esd_figure([(l, a.get("init"), a["trained"]) for l, a in analyses.items()], ncols, title),
               os.path.join(out_dir, "esd"))
    ranked = [(l, a) for l, a in analyses.items() if "sweep" in a]  # layers with a rank to choose
    if ranked:
      residuals_ = [(l, a["trained"], a.get("init"), a.get("update")) for l, a in ranked]
      plots.save(plots.residuals_figure(residuals_, ncols, title), os.path.join(out_dir, "residuals"))
      accuracy = [(l, a["sweep"], a["trained"]["elbow"], a.get("update", {}).get("elbow")) for l, a in ranked]
      plots.save(plots.accuracy_figure(accuracy, ncols, f"{title}: test accuracy"), os.path.join(out_dir, "accuracy"))
    log(f"wrote {out_dir}/results.json and esd, residuals, accuracy (.png, .pdf)")
  return results


def chosen_layers(net: Network, names) -> list[str]:
  """The layers `names` selects ('all': every Dense and Conv layer), each checked to exist."""
  layers = list(topology.names(net)) if tuple(names) == ("all",) else list(names)
  for layer in layers:
    topology.check(net, layer, error=SpectralError)
  return layers


def analyze_layers(run_: Run, model, variables, dataset, layers, cfg: SubspaceConfig, log=print) -> dict:
  """`analyze_layer` of each layer of replica `cfg.replica` on the first `cfg.max_examples` test images."""
  init_params = None if cfg.variables else run_.snapshot(0, replica=cfg.replica)
  x, y = dataset.test_x[: cfg.max_examples], dataset.test_y[: cfg.max_examples]
  analyses = {}
  for index, layer in enumerate(layers):
    begin = time.time()
    a = analyses[layer] = analyze_layer(model, variables, init_params, layer, x, y, num_ranks=cfg.num_ranks,
                                        data_chunk=cfg.eval_chunk, k_chunk=cfg.rank_chunk)
    t = a["trained"]
    line = f"[{index + 1}/{len(layers)}] {layer}: m={t['m']} n={t['n']} Q={t['Q']:.3g}"
    line += f" spikes {t['fit']['spikes']} (TW {t['fit']['spikes_tw']})"
    if "elbow" in t and "update" not in a:
      line += f" elbow k={t['elbow']} ||W_k||/||W||={t['kept_norm_percent']:.2f}% a={100 * a['a']:.2f}% a_proj={100 * a['a_proj']:.2f}%"
    elif "elbow" in t:
      line += (f" elbow k={t['elbow']} ||W_k||/||W||={t['kept_norm_percent']:.2f}% "
               f"a={100 * a['a']:.2f}% a_proj={100 * a['a_proj']:.2f}% a_NK={100 * a['a_project_update']:.2f}%; "
               f"update elbow k={a['update']['elbow']} a_NK={100 * a['a_project_update_at_update_elbow']:.2f}%")
    log(f"{line} ({time.time() - begin:.1f}s)")
  return analyses

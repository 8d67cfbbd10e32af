"""Subspace analysis of a trained network (SPEC section 4, report section 3.3): the accuracy on data of
low-rank replacements of a layer, batched over ranks through `variants.py`, and the whole analysis of one
layer (its spectra from `spectral.py` plus those accuracies).

  acc = rank_sweep(model, variables, "fc1", x, y, ks, init_params=p0)   # every k, batched
  result = analyze_layer(model, variables, p0, "fc1", x, y)             # JSON-ready
  row = low_rank_replacement(model, variables, p0, "fc1", x, y)         # one seed of Figure 8
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax import variants
from redundancy_jax.models import PlanNet, check_layer, dense_input, layer_of, previous_layer
from redundancy_jax.pruning import unit_matrix
from redundancy_jax.spectral import (
  SpectralError, check_matrix, check_rank, elbow, glorot_variance, kept_norm, kernel_from_units, residuals,
  summarize, truncate,
)


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


def _factor_inputs(model, layer, variables, factors, h):
  """`prepare` of a dense layer: per mode, its pre-activation with the base weights (x base^T + b) and
  its input on the right singular vectors (x Vt^T), computed once per data chunk and shared by every k."""
  x = dense_input(model, previous_layer(model, layer), layer, h)
  bias = variables["params"][layer]["bias"]
  return jnp.einsum("nj,dmj->dnm", x, factors["base"]) + bias, jnp.einsum("nj,dpj->dnp", x, factors["Vt"])


def _factorized_rank(model, layer, variables, factors, inputs, y, variant):
  """`score` of (mode, k) for a dense layer: z_k = x base^T + b + ((x Vt^T) * s_k) U^T, then the layers
  after this one. W_k is never formed."""
  mode, k = variant
  z0, A = inputs[0][mode], inputs[1][mode]
  s = factors["s"][mode]
  z = z0 + (A * jnp.where(jnp.arange(s.shape[0]) < k, s, 0.0)) @ factors["U"][mode].T
  logits = z if layer_of(model, layer).output else model.apply(variables, jax.nn.relu(z), start=layer)
  return variants.loss_and_correct(logits, y)


def _replaced_rank(model, layer, variables, factors, h, y, variant):
  """`score` of (mode, k) for any layer: its kernel replaced by base + truncate(U, s, Vt, k), and the
  network run on from the previous layer's activation `h` (from the input when there is none)."""
  mode, k = variant
  params = variables["params"]
  kernel = params[layer]["kernel"]
  W = factors["base"][mode] + truncate(factors["U"][mode], factors["s"][mode], factors["Vt"][mode], k)
  v = {**variables, "params": {**params, layer: {**params[layer], "kernel": kernel_from_units(W, kernel.shape)}}}
  prev = previous_layer(model, layer)
  return variants.loss_and_correct(model.apply(v, h) if prev is None else model.apply(v, h, start=prev), y)


def rank_sweep(
  model: PlanNet,
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
  check_layer(model, layer, error=SpectralError)
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
    factorized = layer_of(model, layer).kind == "dense"
  prepare, score = (_factor_inputs, _factorized_rank) if factorized else (variants.keep_inputs, _replaced_rank)
  spec = variants.Pass(layer, previous_layer(model, layer), prepare, score, k_chunk, data_chunk)
  mode_V = np.repeat(np.arange(len(modes), dtype=np.int32), len(ks))
  k_V = np.tile(ks.astype(np.int32), len(modes))
  _, correct = variants.evaluate(model, variables, x, y, spec, (mode_V, k_V), factors)
  accuracy = np.asarray(correct).reshape(len(modes), len(ks)) / len(y)
  full = variants.loss_and_accuracy(model, variables, x, y, data_chunk=data_chunk)[1]
  return {"ks": ks, "full": full, **{name: accuracy[i] for i, name in enumerate(modes)}}


def analyze_layer(
  model: PlanNet,
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
  and W -> W0 + P_k(W - W0).

  `a` is the unchanged network's accuracy, `a_proj` and `a_project_update` those at W's elbow k, and
  `a_project_update_at_update_elbow` Nagarajan-Kolter's at the update's own elbow.
  """
  kernel_shape = np.shape(variables["params"][layer]["kernel"])
  var = glorot_variance(kernel_shape)
  W, W0 = unit_matrix(variables, layer), unit_matrix(init_params, layer)
  trained = summarize(W, init_var=var, layer=layer)
  init = summarize(W0, init_var=var, layer=f"{layer} at initialisation")
  out = {"layer": layer, "kernel_shape": list(kernel_shape), "trained": trained, "init": init}
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


def low_rank_replacement(model: PlanNet, variables: Mapping, init_params: Mapping, layer: str, x, y,
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


# Figure 8's per-seed quantities summarised over seeds (mean and std; the ranks also min and max).
TABLE_KEYS = ("k", "kept_norm_percent", "drop", "drop_project_update", "k_update",
              "drop_project_update_at_update_elbow", "a", "best_step")


def table_row(seeds: Sequence[dict], **info) -> dict:
  """One model's column of Figure 8 from its replicas' `low_rank_replacement` entries (each with its
  `best_step`); `info` (model, layer, dataset, width, steps, ...) is copied in."""
  m, n = seeds[0]["neurons"], seeds[0]["inputs"]
  row = {**info, "num_seeds": len(seeds), "neurons": m, "inputs": n, "Q": n / m}
  for key in TABLE_KEYS:
    values = [s[key] for s in seeds]
    row[f"{key}_mean"], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
  for key in ("k", "k_update"):
    row[f"{key}_min"], row[f"{key}_max"] = min(s[key] for s in seeds), max(s[key] for s in seeds)
  row["seeds"] = list(seeds)
  return row


def table_markdown(rows: Sequence[dict]) -> str:
  """Figure 8 with one column per model, as in the report."""
  pm = lambda r, key, f: f"{r[key + '_mean']:{f}} ± {r[key + '_std']:{f}}"
  rank = lambda key: lambda r: f"{r[key + '_mean']:.3g}" + (
    f" ({r[key + '_min']}-{r[key + '_max']})" if r[key + "_min"] != r[key + "_max"] else "")
  lines = [
    ("Network", lambda r: r["model"] + (f" (width {r['width']:g})" if r["width"] != 1.0 else "")),
    ("Layer", lambda r: r["layer"]),
    ("Number of neurons m", lambda r: str(r["neurons"])),
    ("Aspect ratio Q = n/m", lambda r: f"{r['Q']:.3g}"),
    ("Rank k (elbow of W; mean, range)", rank("k")),
    ("`100 ‖W_k‖_F / ‖W‖_F`", lambda r: pm(r, "kept_norm_percent", ".2f")),
    ("a − a_proj (points)", lambda r: pm(r, "drop", ".2f")),
    ("Standard deviation of a − a_proj", lambda r: f"{r['drop_std']:.2f}"),
    ("a − a_NK with `W0 + P_k(W − W0)`, same k (points)", lambda r: pm(r, "drop_project_update", ".2f")),
    ("Rank k_Δ (elbow of the update W − W0)", rank("k_update")),
    ("a − a_NK at the update's elbow (points)", lambda r: pm(r, "drop_project_update_at_update_elbow", ".2f")),
    ("Test accuracy a (%)", lambda r: f"{100 * r['a_mean']:.2f} ± {100 * r['a_std']:.2f}"),
    ("Seeds", lambda r: str(r["num_seeds"])),
    ("Training iterations", lambda r: f"{r['steps']:,}"),
    ("Kept iteration j (min. validation loss; mean)", lambda r: f"{r['best_step_mean']:,.0f}"),
    ("Data", lambda r: r["dataset"]),
  ]
  out = ["| | " + " | ".join(lines[0][1](r) for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
  out += [f"| {name} | " + " | ".join(fmt(r) for r in rows) + " |" for name, fmt in lines[1:]]
  return "\n".join(out) + "\n"

"""The report's claims (section 3), each a rule applied to the numbers of the stage records, giving a
`Verdict` (the type the related-work headlines use too); none is written by hand, and a claim whose
stages did not run is "not testable" at that profile.

  verdicts = claims(records)            # [Verdict], in the report's order
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from redundancy_jax.analyses.prune_sweep import removable_fraction
from redundancy_jax.core.verdicts import ABOVE, COUNT_FLOOR, SIGMAS, WITHIN, Verdict, beyond_control

# Thresholds of the verdicts (BUILD_NOTES.md, "Reproducing the report", says why these values).
AGREE_POINTS = 1.0  # magnitude and FP "agree" while their accuracies differ by at most this many points
AGREE_UP_TO = 0.5  # ... up to at least this fraction of the units ("quite a high value of pruned units")
REMOVABLE_FRACTION = 0.25  # the smallest-norm quarter: the units magnitude pruning removes first
REMOVABLE_COST = 1.0  # points lost at most when those units are removed
NUM_CLASSES = 10


class Tested(NamedTuple):
  """What a claim's test found: the verdict, its evidence, and the effect against its control's spread
  (in `unit`, measured on `measured_on`; `test` and `tolerance` as `Verdict`'s)."""

  ok: bool
  evidence: str
  effect: float | None = None
  control_spread: float | None = None
  unit: str = ""
  measured_on: str = ""
  test: str = ABOVE
  tolerance: float | None = None


POINTS = "points of accuracy"


def _smallest(effects: dict[str, float], spreads: dict[str, float], what: str = "") -> tuple[float, float, str]:
  """(smallest effect, largest spread, where) of a claim that must hold for every one of `effects`;
  `what` says how each effect is taken."""
  name = min(effects, key=effects.get)
  where = name + (f", {what}" if what else "")
  if len(effects) == 1:
    return effects[name], spreads[name], where
  return effects[name], max(spreads.values()), (f"{where} (the smallest of {len(effects)} effects; control: the "
                                                f"largest of their spreads)")


def _auc(curve: Sequence[float]) -> float:
  """Mean accuracy over the swept levels, in percent (the area under the curve per level)."""
  return 100 * float(np.mean(curve))


def _pruned_layers(records: dict):
  for model in ("lenet", "conv2"):
    rec = records.get(f"{model}.prune")
    if rec:
      for layer, r in rec["result"]["layers"].items():
        yield f"{model} {layer}", r


def _aucs(r: dict) -> dict[str, float]:
  out = {c: _auc(curve["accuracy"]) for c, curve in r["criteria"].items()}
  if "random" in r:
    out["random"] = _auc(r["random"]["accuracy_mean"])
  return out


def _random_spread(r: dict, upto: int | None = None) -> float:
  """The control of the pruning claims: random pruning's accuracy spread over its random orders, in
  points, averaged over the levels (up to `upto` units): at least the spread of its mean accuracy."""
  levels = np.asarray(r["levels"])
  keep = levels <= (levels.max() if upto is None else upto)
  return 100 * float(np.mean(np.asarray(r["random"]["accuracy_std"])[keep]))


def _claim_order(records):
  layers = list(_pruned_layers(records))
  if not layers or not all("random" in r for _, r in layers):
    return None
  parts, effects = [], {}
  for name, r in layers:
    a = _aucs(r)
    if not {"max_mag", "max_fp", "min_mag", "min_fp", "random"} <= set(a):
      return None
    effects[name] = min(min(a["max_mag"], a["max_fp"]) - a["random"], a["random"] - max(a["min_mag"], a["min_fp"]))
    parts.append(f"{name}: " + ", ".join(f"{c} {a[c]:.1f}" for c in ("max_mag", "max_fp", "random", "min_mag", "min_fp")))
  effect, spread, where = _smallest(effects, {name: _random_spread(r) for name, r in layers})
  return Tested(beyond_control(effect, spread), "mean accuracy (%) over all removal levels; " + "; ".join(parts),
                effect, spread, POINTS, where)


def _claim_magnitude_better(records):
  layers = list(_pruned_layers(records))
  if not layers or not all("random" in r for _, r in layers):
    return None
  aucs = [(name, _aucs(r)) for name, r in layers]
  effect, spread, where = _smallest({name: a["max_mag"] - a["max_fp"] for name, a in aucs},
                                    {name: _random_spread(r) for name, r in layers})
  return Tested(beyond_control(effect, spread), "mean accuracy (%) over all levels, max_mag vs max_fp: " + "; ".join(
    f"{name} {a['max_mag']:.1f} vs {a['max_fp']:.1f}" for name, a in aucs), effect, spread, POINTS, where)


DATA_AWARE = ("max_taylor", "max_act")  # the field's data-aware criteria the claim below pits against max_mag


def _claim_data_aware(records):
  layers = list(_pruned_layers(records))
  if not layers or not all("random" in r for _, r in layers):
    return None
  aucs = [(name, _aucs(r)) for name, r in layers]
  if not all({"max_mag", *DATA_AWARE} <= set(a) for _, a in aucs):
    return "the pruning stages ran without the data-aware criteria (max_taylor, max_act)"
  best = {name: max(DATA_AWARE, key=lambda c: a[c]) for name, a in aucs}
  effect, spread, where = _smallest({name: a[best[name]] - a["max_mag"] for name, a in aucs},
                                    {name: _random_spread(r) for name, r in layers})
  return Tested(beyond_control(effect, spread), "mean accuracy (%) over all levels, the better data-aware criterion "
                "vs max_mag: " + "; ".join(f"{name} {best[name]} {a[best[name]]:.1f} vs {a['max_mag']:.1f}"
                                          for name, a in aucs), effect, spread, POINTS, where)


def _criteria_gap(r: dict) -> np.ndarray:
  """|accuracy of max_mag - accuracy of max_fp| at every level (fractions)."""
  return np.abs(np.asarray(r["criteria"]["max_mag"]["accuracy"]) - np.asarray(r["criteria"]["max_fp"]["accuracy"]))


def agreement_fraction(r: dict, points: float = AGREE_POINTS) -> float:
  """The largest fraction f of units such that max_mag and max_fp differ by at most `points` at every
  level up to f * m (0 when they already differ at the first removal)."""
  return removable_fraction(np.asarray(r["levels"]), -_criteria_gap(r), 0.0, points / 100)


def _claim_agree(records):
  rec = records.get("conv2.prune")
  if not rec or "fc1" not in rec["result"]["layers"] or "random" not in rec["result"]["layers"]["fc1"]:
    return None
  r = rec["result"]["layers"]["fc1"]
  f = agreement_fraction(r)
  upto = int(AGREE_UP_TO * r["units"])
  levels = np.asarray(r["levels"])
  effect = float(100 * _criteria_gap(r)[levels <= upto].max())
  return Tested(f >= AGREE_UP_TO, f"max_mag and max_fp stay within {AGREE_POINTS:g} point up to {100 * f:.0f}% of the "
                                  f"units removed (holds from {100 * AGREE_UP_TO:.0f}%); largest gap up to "
                                  f"{100 * AGREE_UP_TO:.0f}%: {effect:.2f} points", effect, _random_spread(r, upto),
                POINTS, f"conv2 fc1, the largest gap up to {100 * AGREE_UP_TO:.0f}% of its units", WITHIN, AGREE_POINTS)


NO_CONTROL = "the stage's record holds no control (written before controls were recorded): rerun the stage"


def _dyn(records, stage):
  rec = records.get(stage)
  return rec["result"] if rec else None


def _controlled_dyn(records):
  """Conv-2's dynamics record, None when the stage did not run, or `NO_CONTROL` when it holds no control."""
  d = _dyn(records, "conv2.dynamics")
  return NO_CONTROL if d and "control" not in d else d


def _claim_closer(records):
  d = _controlled_dyn(records)
  if not isinstance(d, dict):
    return d
  i, c = d["init"], d["converged"]
  effect, spread = c["mean_cosine"] - i["mean_cosine"], d["control"]["mean_cosine"][1]
  ok = beyond_control(effect, spread) and c["edges"] > i["edges"]
  return Tested(ok, f"conv2 {d['layer']}: mean pairwise cosine {i['mean_cosine']:.4f} at init -> {c['mean_cosine']:.4f} "
                    f"converged (std over initialiser draws {spread:.4f}); edges above the threshold (cosine "
                    f"{d['threshold_cosine']:.3f}) {i['edges']} -> {c['edges']}", effect, spread,
                "mean pairwise cosine", f"conv2 {d['layer']}, converged minus initialisation")


def _claim_cluster(records):
  d = _controlled_dyn(records)
  if not isinstance(d, dict):
    return d
  c, m = d["converged"], d["units"]
  mean, spread = d["control"]["largest_fraction"]
  effect = c["largest_component"] / m - mean
  ok = c["largest_component"] >= m / 2 and c["outside_largest"] > 0 and beyond_control(effect, spread)
  return Tested(ok, f"conv2 {d['layer']} converged: largest component {c['largest_component']} of {m} units, "
                    f"{c['outside_largest']} outside it, {c['components']} components; initialiser draws at the same "
                    f"threshold: largest component {100 * mean:.1f}% ± {100 * spread:.1f}% of the units",
                effect, spread, "fraction of the units", f"conv2 {d['layer']} converged, minus the draws' mean")


def _claim_removable(records):
  d, p = _dyn(records, "conv2.dynamics"), records.get("conv2.prune")
  if not d or not p or d["movement_others"] is None:
    return None
  if "movement_gap_control_std" not in d:
    return NO_CONTROL
  r = p["result"]["layers"]["fc1"]
  level = int(np.argmin(np.abs(np.asarray(r["levels"]) - REMOVABLE_FRACTION * r["units"])))
  cost = 100 * (r["base_accuracy"] - r["criteria"]["max_mag"]["accuracy"][level])
  effect, spread = d["movement_others"] - d["movement_smallest_quarter"], d["movement_gap_control_std"]
  ok = beyond_control(effect, spread) and cost <= REMOVABLE_COST
  return Tested(ok, f"conv2 fc1: median relative movement ||w_T - w_0|| / ||w_0|| of the smallest-norm quarter "
                    f"{d['movement_smallest_quarter']:.3f} vs the others {d['movement_others']:.3f} (random quarters: "
                    f"std {spread:.3f}); removing that quarter costs {cost:.2f} points (holds up to {REMOVABLE_COST:g})",
                effect, spread, "relative movement", "conv2 fc1, the others' median minus the smallest quarter's")


def _spectra(records):
  for model in ("lenet", "conv2", "conv6", "vgg19"):
    rec = records.get(f"{model}.subspace")
    if rec:
      for layer, a in rec["result"]["layers"].items():
        yield f"{model} {layer}", a


def _claim_spikes(records):
  spectra = list(_spectra(records))
  if not spectra:
    return None
  if not all("control" in a for _, a in spectra):
    return NO_CONTROL
  effect, spread, where = _smallest({name: a["trained"]["spikes"] - a["control"]["spikes"][0] for name, a in spectra},
                                    {name: max(a["control"]["spikes"][1], COUNT_FLOOR) for name, a in spectra})
  ok = beyond_control(effect, spread) and all(a["trained"]["spikes"] <= a["trained"]["m"] / 4 for _, a in spectra)
  return Tested(ok, "eigenvalues of W W^T above the fitted lambda+, initialiser draws (mean) -> trained (of m): " +
                "; ".join(f"{name} {a['control']['spikes'][0]:.1f} -> {a['trained']['spikes']} (of {a['trained']['m']})"
                          for name, a in spectra), effect, spread, "eigenvalues", where)


def figure8_rows(records) -> dict[str, dict]:
  """{model: its Figure 8 row} of the subspace stages that ran."""
  return {m: records[f"{m}.subspace"]["result"]["row"] for m in ("lenet", "conv2", "conv6", "vgg19")
          if f"{m}.subspace" in records}


def _claim_elbow(records):
  rows = figure8_rows(records)
  if not rows:
    return None
  controls = {m: records[f"{m}.subspace"]["result"]["layers"].get("fc1", {}).get("control") for m in rows}
  if not all(controls.values()):
    return NO_CONTROL
  effect, spread, where = _smallest({f"{m} fc1": controls[m]["elbow"][0] - r["k_mean"] for m, r in rows.items()},
                                    {f"{m} fc1": max(c["elbow"][1], COUNT_FLOOR) for m, c in controls.items()},
                                    "the draws' mean minus the trained mean")
  ok = all(NUM_CLASSES / 2 <= r["k_mean"] <= 2 * NUM_CLASSES for r in rows.values()) and beyond_control(effect, spread)
  return Tested(ok, f"mean elbow k of fc1 (holds within {NUM_CLASSES // 2}-{2 * NUM_CLASSES}), initialiser draws -> "
                    "trained: " + "; ".join(f"{m} {controls[m]['elbow'][0]:.1f} -> {r['k_mean']:.3g}"
                                            for m, r in rows.items()), effect, spread, "ranks (elbow k)", where)


ONE_SEED = "needs at least 2 seeds per model: the control is the spread over seeds"


def _claim_depth(records):
  rows = figure8_rows(records)
  if not {"conv2", "conv6", "vgg19"} <= set(rows):
    return None
  if min(rows[m]["num_seeds"] for m in ("conv2", "conv6", "vgg19")) < 2:
    return ONE_SEED
  d = [rows[m]["drop_mean"] for m in ("conv2", "conv6", "vgg19")]
  effect, spread, where = _smallest({"conv2 fc1 minus conv6 fc1": d[0] - d[1], "conv6 fc1 minus vgg19 fc1": d[1] - d[2]},
                                    {m: rows[m]["drop_std"] for m in ("conv2", "conv6", "vgg19")})
  return Tested(beyond_control(effect, spread), "a - a_proj at the elbow (points, mean over seeds): conv2 {:.2f}, "
                "conv6 {:.2f}, vgg19 {:.2f}".format(*d), effect, spread, POINTS, where)


def _claim_vgg_norm(records):
  rows = figure8_rows(records)
  if "vgg19" not in rows or len(rows) < 2:
    return None
  if min(r["num_seeds"] for r in rows.values()) < 2:
    return ONE_SEED
  kept = {m: r["kept_norm_percent_mean"] for m, r in rows.items()}
  runner_up = max((m for m in kept if m != "vgg19"), key=kept.get)
  effect = kept["vgg19"] - kept[runner_up]
  spread = max(r["kept_norm_percent_std"] for r in rows.values())
  return Tested(beyond_control(effect, spread), "100 ||W_k|| / ||W|| at the elbow: " + "; ".join(
    f"{m} {v:.2f}" for m, v in kept.items()), effect, spread, "percent of the norm",
    f"vgg19 fc1 minus {runner_up} fc1, the next largest (control: the largest spread over seeds)")


_BEYOND = f"by more than {SIGMAS:g} standard deviations of "
# (section, claim, rule, test): a test returns `Tested`, None when its stages did not run, or why it cannot decide.
CLAIMS: tuple[tuple[str, str, str, Callable], ...] = (
  ("3.1", "Maximising criteria (max_mag, max_fp) beat random pruning, and random beats the minimising ones",
   "mean accuracy over all removal levels, per pruned layer: min(max_mag, max_fp) > random > max(min_mag, min_fp), "
   "each gap " + _BEYOND + "random pruning's accuracy over its random orders", _claim_order),
  ("3.1", "Magnitude pruning performs better than frame-potential pruning",
   "mean accuracy over all levels: max_mag above max_fp for every pruned layer " + _BEYOND +
   "random pruning's accuracy", _claim_magnitude_better),
  ("3.1-3.2", "On Conv-2 fc1, magnitude and frame-potential pruning perform equally well up to a high number of "
   "pruned units", f"max_mag and max_fp within {AGREE_POINTS:g} point at every level up to {100 * AGREE_UP_TO:.0f}% "
   "of Conv-2 fc1's units (an equality claim: the effect is the largest gap, the control random pruning's spread)",
   _claim_agree),
  ("3.2", "Weight vectors move closer to each other during training",
   "the mean pairwise cosine grows from initialisation to convergence " + _BEYOND + "it over layers drawn by the "
   "initialiser, and the edge count at the fixed threshold grows", _claim_closer),
  ("3.2", "One big cluster forms, with outliers outside it",
   "the largest component holds at least half the units and some are outside it, and its share exceeds that of "
   "layers drawn by the initialiser at the same threshold " + _BEYOND + "it", _claim_cluster),
  ("3.2", "Removable units barely move during training and can be dropped without hurting accuracy much",
   f"the smallest-norm quarter moves less (median ||w_T - w_0|| / ||w_0||) than the others {_BEYOND}the same gap "
   f"for random quarters, and removing it costs at most {REMOVABLE_COST:g} point", _claim_removable),
  ("3.3", "Trained layers converge to a low-complexity solution: a few eigenvalues leave the Marchenko-Pastur bulk",
   "more eigenvalues above the fitted lambda+ than layers drawn by the initialiser " + _BEYOND + "their count, and "
   "at most m/4", _claim_spikes),
  ("3.3", "The elbow k of the first dense layer is near the number of classes (10)",
   f"the mean elbow k of every model within {NUM_CLASSES // 2}..{2 * NUM_CLASSES}, and below that of layers drawn "
   "by the initialiser " + _BEYOND + "it", _claim_elbow),
  ("3.3", "The deeper the model, the smaller the accuracy drop a - a_proj of the rank-k replacement",
   "a - a_proj: Conv-2 > Conv-6 > VGG19, each step " + _BEYOND + "a - a_proj over seeds", _claim_depth),
  ("3.3", "VGG19's first dense layer keeps almost all of its norm at rank k (its noise is suppressed)",
   "VGG19's 100 ||W_k|| / ||W|| above every other model's " + _BEYOND + "it over seeds", _claim_vgg_norm),
  ("beyond", "Data-aware criteria (first-order Taylor, mean activation) beat the report's best weight-based one "
   "(max_mag)", "mean accuracy over all removal levels, per pruned layer: the better of max_taylor and max_act above "
   "max_mag " + _BEYOND + "random pruning's accuracy over its random orders", _claim_data_aware),
)


def claims(records: dict) -> list[Verdict]:
  """Every claim of CLAIMS with the numbers of this run that test it and the computed verdict."""
  out = []
  for section, text, rule, test in CLAIMS:
    tested = test(records)
    if not isinstance(tested, Tested):
      why = "the stages it needs were not run" if tested is None else tested
      out.append(Verdict.untestable(text, why, rule=rule, section=section))
    else:
      out.append(Verdict.decide(text, tested.ok, tested.evidence, rule=rule, section=section, effect=tested.effect,
                                control_spread=tested.control_spread, unit=tested.unit,
                                measured_on=tested.measured_on, test=tested.test, tolerance=tested.tolerance))
  return out


def related_verdicts(records: dict) -> dict[str, list[Verdict]]:
  """{experiment: its headline verdicts} of the related-work stages that ran."""
  return {stage.split(".")[1]: [Verdict.from_json(v) for v in rec["result"]["headlines"]]
          for stage, rec in records.items() if stage.startswith("related.")}

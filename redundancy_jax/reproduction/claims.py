"""The report's claims (section 3), each a rule applied to the numbers of the stage records, giving a
`Verdict` (the type the related-work headlines use too); none is written by hand, and a claim whose
stages did not run is "not testable" at that profile.

  verdicts = claims(records)            # [Verdict], in the report's order
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from redundancy_jax.analyses.prune_sweep import removable_fraction
from redundancy_jax.core.verdicts import Verdict

# Thresholds of the verdicts (BUILD_NOTES.md, "Reproducing the report", says why these values).
AGREE_POINTS = 1.0  # magnitude and FP "agree" while their accuracies differ by at most this many points
AGREE_UP_TO = 0.5  # ... up to at least this fraction of the units ("quite a high value of pruned units")
REMOVABLE_FRACTION = 0.25  # the smallest-norm quarter: the units magnitude pruning removes first
REMOVABLE_COST = 1.0  # points lost at most when those units are removed
NUM_CLASSES = 10


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


def _claim_order(records):
  layers = list(_pruned_layers(records))
  if not layers:
    return None
  parts, ok = [], True
  for name, r in layers:
    a = _aucs(r)
    if not {"max_mag", "max_fp", "min_mag", "min_fp", "random"} <= set(a):
      return None
    ok &= min(a["max_mag"], a["max_fp"]) > a["random"] > max(a["min_mag"], a["min_fp"])
    parts.append(f"{name}: " + ", ".join(f"{c} {a[c]:.1f}" for c in ("max_mag", "max_fp", "random", "min_mag", "min_fp")))
  return ok, "mean accuracy (%) over all removal levels; " + "; ".join(parts)


def _claim_magnitude_better(records):
  layers = list(_pruned_layers(records))
  if not layers:
    return None
  aucs = [(name, _aucs(r)) for name, r in layers]
  ok = all(a["max_mag"] >= a["max_fp"] for _, a in aucs)
  return ok, "mean accuracy (%) over all levels, max_mag vs max_fp: " + "; ".join(
    f"{name} {a['max_mag']:.1f} vs {a['max_fp']:.1f}" for name, a in aucs)


def agreement_fraction(r: dict, points: float = AGREE_POINTS) -> float:
  """The largest fraction f of units such that max_mag and max_fp differ by at most `points` at every
  level up to f * m (0 when they already differ at the first removal)."""
  gap = np.abs(np.asarray(r["criteria"]["max_mag"]["accuracy"]) - np.asarray(r["criteria"]["max_fp"]["accuracy"]))
  return removable_fraction(np.asarray(r["levels"]), -gap, 0.0, points / 100)


def _claim_agree(records):
  rec = records.get("conv2.prune")
  if not rec or "fc1" not in rec["result"]["layers"]:
    return None
  f = agreement_fraction(rec["result"]["layers"]["fc1"])
  return f >= AGREE_UP_TO, (f"max_mag and max_fp stay within {AGREE_POINTS:g} point up to {100 * f:.0f}% of the "
                            f"units removed (holds from {100 * AGREE_UP_TO:.0f}%)")


def _dyn(records, stage):
  rec = records.get(stage)
  return rec["result"] if rec else None


def _claim_closer(records):
  d = _dyn(records, "conv2.dynamics")
  if not d:
    return None
  i, c = d["init"], d["converged"]
  ok = c["mean_cosine"] > i["mean_cosine"] and c["edges"] > i["edges"]
  return ok, (f"conv2 {d['layer']}: mean pairwise cosine {i['mean_cosine']:.3f} at init -> {c['mean_cosine']:.3f} "
              f"converged; edges above the threshold (cosine {d['threshold_cosine']:.3f}) {i['edges']} -> {c['edges']}")


def _claim_cluster(records):
  d = _dyn(records, "conv2.dynamics")
  if not d:
    return None
  c = d["converged"]
  ok = c["largest_component"] >= d["units"] / 2 and c["outside_largest"] > 0
  return ok, (f"conv2 {d['layer']} converged: largest component {c['largest_component']} of {d['units']} units, "
              f"{c['outside_largest']} outside it, {c['components']} components")


def _claim_removable(records):
  d, p = _dyn(records, "conv2.dynamics"), records.get("conv2.prune")
  if not d or not p or d["movement_others"] is None:
    return None
  r = p["result"]["layers"]["fc1"]
  level = int(np.argmin(np.abs(np.asarray(r["levels"]) - REMOVABLE_FRACTION * r["units"])))
  cost = 100 * (r["base_accuracy"] - r["criteria"]["max_mag"]["accuracy"][level])
  ok = d["movement_smallest_quarter"] < d["movement_others"] and cost <= REMOVABLE_COST
  return ok, (f"conv2 fc1: median relative movement ||w_T - w_0|| / ||w_0|| of the smallest-norm quarter "
              f"{d['movement_smallest_quarter']:.3f} vs the others {d['movement_others']:.3f}; removing that quarter "
              f"costs {cost:.2f} points (holds up to {REMOVABLE_COST:g})")


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
  ok = all(a["init"]["spikes"] < a["trained"]["spikes"] <= a["trained"]["m"] / 4 for _, a in spectra)
  return ok, "eigenvalues of W W^T above the fitted lambda+, init -> trained (of m): " + "; ".join(
    f"{name} {a['init']['spikes']} -> {a['trained']['spikes']} (of {a['trained']['m']})" for name, a in spectra)


def figure8_rows(records) -> dict[str, dict]:
  """{model: its Figure 8 row} of the subspace stages that ran."""
  return {m: records[f"{m}.subspace"]["result"]["row"] for m in ("lenet", "conv2", "conv6", "vgg19")
          if f"{m}.subspace" in records}


def _claim_elbow(records):
  rows = figure8_rows(records)
  if not rows:
    return None
  ok = all(NUM_CLASSES / 2 <= r["k_mean"] <= 2 * NUM_CLASSES for r in rows.values())
  return ok, (f"mean elbow k of fc1 (holds within {NUM_CLASSES // 2}-{2 * NUM_CLASSES}): " +
              "; ".join(f"{m} {r['k_mean']:.3g}" for m, r in rows.items()))


def _claim_depth(records):
  rows = figure8_rows(records)
  if not {"conv2", "conv6", "vgg19"} <= set(rows):
    return None
  d = [rows[m]["drop_mean"] for m in ("conv2", "conv6", "vgg19")]
  return d[0] >= d[1] >= d[2], "a - a_proj at the elbow (points): conv2 {:.2f}, conv6 {:.2f}, vgg19 {:.2f}".format(*d)


def _claim_vgg_norm(records):
  rows = figure8_rows(records)
  if "vgg19" not in rows or len(rows) < 2:
    return None
  kept = {m: r["kept_norm_percent_mean"] for m, r in rows.items()}
  ok = kept["vgg19"] >= max(kept.values())
  return ok, "100 ||W_k|| / ||W|| at the elbow: " + "; ".join(f"{m} {v:.2f}" for m, v in kept.items())


# (section, claim, rule, test): a test returns (holds, evidence), or None when its stages did not run.
CLAIMS: tuple[tuple[str, str, str, Callable], ...] = (
  ("3.1", "Maximising criteria (max_mag, max_fp) beat random pruning, and random beats the minimising ones",
   "mean accuracy over all removal levels, per pruned layer: min(max_mag, max_fp) > random > max(min_mag, min_fp)",
   _claim_order),
  ("3.1", "Magnitude pruning performs better than frame-potential pruning",
   "mean accuracy over all levels: max_mag >= max_fp for every pruned layer", _claim_magnitude_better),
  ("3.1-3.2", "On Conv-2 fc1, magnitude and frame-potential pruning perform equally well up to a high number of "
   "pruned units", f"max_mag and max_fp within {AGREE_POINTS:g} point at every level up to {100 * AGREE_UP_TO:.0f}% "
   "of Conv-2 fc1's units", _claim_agree),
  ("3.2", "Weight vectors move closer to each other during training",
   "the mean pairwise cosine and the edge count at the fixed threshold both grow from initialisation to "
   "convergence", _claim_closer),
  ("3.2", "One big cluster forms, with outliers outside it",
   "the largest component holds at least half the units and some are outside it", _claim_cluster),
  ("3.2", "Removable units barely move during training and can be dropped without hurting accuracy much",
   f"the smallest-norm quarter moves less (median ||w_T - w_0|| / ||w_0||) than the others, and removing it "
   f"costs at most {REMOVABLE_COST:g} point", _claim_removable),
  ("3.3", "Trained layers converge to a low-complexity solution: a few eigenvalues leave the Marchenko-Pastur bulk",
   "more eigenvalues above the fitted lambda+ than at initialisation, and at most m/4", _claim_spikes),
  ("3.3", "The elbow k of the first dense layer is near the number of classes (10)",
   f"the mean elbow k of every model within {NUM_CLASSES // 2}..{2 * NUM_CLASSES}", _claim_elbow),
  ("3.3", "The deeper the model, the smaller the accuracy drop a - a_proj of the rank-k replacement",
   "a - a_proj: Conv-2 >= Conv-6 >= VGG19", _claim_depth),
  ("3.3", "VGG19's first dense layer keeps almost all of its norm at rank k (its noise is suppressed)",
   "VGG19's 100 ||W_k|| / ||W|| is the largest of the models", _claim_vgg_norm),
)


def claims(records: dict) -> list[Verdict]:
  """Every claim of CLAIMS with the numbers of this run that test it and the computed verdict."""
  out = []
  for section, text, rule, test in CLAIMS:
    tested = test(records)
    if tested is None:
      out.append(Verdict.untestable(text, "the stages it needs were not run", rule=rule, section=section))
    else:
      ok, evidence = tested
      out.append(Verdict.decide(text, ok, evidence, rule=rule, section=section))
  return out


def related_verdicts(records: dict) -> dict[str, list[Verdict]]:
  """{experiment: its headline verdicts} of the related-work stages that ran."""
  return {stage.split(".")[1]: [Verdict.from_json(v) for v in rec["result"]["headlines"]]
          for stage, rec in records.items() if stage.startswith("related.")}

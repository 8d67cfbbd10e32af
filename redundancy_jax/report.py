"""The report page of `experiments.reproduce`: Figures 1-8 as numbered in the report, the report's claims
with verdicts computed from the numbers of the run, and provenance, written as one offline HTML page
and as Markdown from the same blocks.

  summary = dynamics_summary(result)          # one layer's graphs at init and convergence, JSON-ready
  rows = claims(records)                      # [{section, claim, evidence, verdict}], every verdict computed
  page = write(root, records, provenance)     # <root>/index.html and <root>/report.md
"""

from __future__ import annotations

import html
import os
from typing import Callable, Sequence

import numpy as np

from redundancy_jax import storage
from redundancy_jax.dynamics import cosine_similarity, unit_norms
from redundancy_jax.pruning import removable_fraction
from redundancy_jax.subspace import table_markdown

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable at this profile"
# Thresholds of the verdicts (BUILD_NOTES.md, "The report page", says why these values).
AGREE_POINTS = 1.0  # magnitude and FP "agree" while their accuracies differ by at most this many points
AGREE_UP_TO = 0.5  # ... up to at least this fraction of the units ("quite a high value of pruned units")
REMOVABLE_FRACTION = 0.25  # the smallest-norm quarter: the units magnitude pruning removes first
REMOVABLE_COST = 1.0  # points lost at most when those units are removed
NUM_CLASSES = 10


# ----------------------------------------------------------------------------- numbers of one stage


def _offdiag_mean_cosine(W) -> float:
  X = cosine_similarity(W)
  m = len(X)
  return float((X.sum() - np.trace(X)) / max(1, m * (m - 1)))


def dynamics_summary(result: dict) -> dict:
  """One layer's graph at the first and the last snapshot, JSON-ready: edges, components, the largest
  component, units outside it, repeated units, mean pairwise cosine, and how far units moved
  (||w_T - w_0|| / ||w_0||) for the smallest-norm quarter at convergence against the others.
  `result` is `dynamics.analyse`'s, with the unit matrices `weights_first` and `weights_last` added."""
  W0, W = np.asarray(result["weights_first"]), np.asarray(result["weights_last"])
  m = len(W)

  def graph(frame, weights):
    stats = frame["stats"]
    return {
      "epoch": int(frame["epoch"]), "edges": stats["edges"], "components": stats["components"],
      "largest_component": stats["largest_component"], "outside_largest": m - stats["largest_component"],
      "repeated_units": stats.get("repeated_units"), "mean_cosine": _offdiag_mean_cosine(weights),
    }

  moved = unit_norms(W - W0) / np.maximum(unit_norms(W0), 1e-30)
  smallest = np.argsort(unit_norms(W), kind="stable")[: max(1, int(round(REMOVABLE_FRACTION * m)))]
  rest = np.setdiff1d(np.arange(m), smallest)
  last = result["frames"][-1]
  return {
    "units": m, "threshold": float(result["threshold"]), "threshold_cosine": float(result["threshold_cosine"]),
    "frames": len(result["frames"]), "init": graph(result["frames"][0], W0), "converged": graph(last, W),
    "movement_smallest_quarter": float(np.median(moved[smallest])),
    "movement_others": float(np.median(moved[rest])) if len(rest) else None,
    "removable_agreement": None if "removable" not in last else {
      "fractions": list(result["fractions"]), "mean": np.asarray(last["removable"]["mean"]).tolist()},
  }


def spectrum_brief(summary: dict) -> dict:
  """What the claims need of `spectral.summarize`'s output."""
  fit = summary["fit"]
  return {"m": summary["m"], "n": summary["n"], "Q": summary["Q"], "spikes": int(fit["spikes"]),
          "spikes_tw": int(fit["spikes_tw"]), "lambda_plus": float(fit["lambda_plus"]),
          "elbow": summary.get("elbow"), "kept_norm_percent": summary.get("kept_norm_percent")}


# ----------------------------------------------------------------------------- claims


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


def _rows(records):
  return {m: records[f"{m}.subspace"]["result"]["row"] for m in ("lenet", "conv2", "conv6", "vgg19")
          if f"{m}.subspace" in records}


def _claim_elbow(records):
  rows = _rows(records)
  if not rows:
    return None
  ok = all(NUM_CLASSES / 2 <= r["k_mean"] <= 2 * NUM_CLASSES for r in rows.values())
  return ok, (f"mean elbow k of fc1 (holds within {NUM_CLASSES // 2}-{2 * NUM_CLASSES}): " +
              "; ".join(f"{m} {r['k_mean']:.3g}" for m, r in rows.items()))


def _claim_depth(records):
  rows = _rows(records)
  if not {"conv2", "conv6", "vgg19"} <= set(rows):
    return None
  d = [rows[m]["drop_mean"] for m in ("conv2", "conv6", "vgg19")]
  return d[0] >= d[1] >= d[2], "a - a_proj at the elbow (points): conv2 {:.2f}, conv6 {:.2f}, vgg19 {:.2f}".format(*d)


def _claim_vgg_norm(records):
  rows = _rows(records)
  if "vgg19" not in rows or len(rows) < 2:
    return None
  kept = {m: r["kept_norm_percent_mean"] for m, r in rows.items()}
  ok = kept["vgg19"] >= max(kept.values())
  return ok, "100 ||W_k|| / ||W|| at the elbow: " + "; ".join(f"{m} {v:.2f}" for m, v in kept.items())


CLAIMS: tuple[tuple[str, str, Callable], ...] = (
  ("3.1", "Maximising criteria (max_mag, max_fp) beat random pruning, and random beats the minimising ones",
   _claim_order),
  ("3.1", "Magnitude pruning performs better than frame-potential pruning", _claim_magnitude_better),
  ("3.1-3.2", "On Conv-2 fc1, magnitude and frame-potential pruning perform equally well up to a high number of "
   "pruned units", _claim_agree),
  ("3.2", "Weight vectors move closer to each other during training", _claim_closer),
  ("3.2", "One big cluster forms, with outliers outside it", _claim_cluster),
  ("3.2", "Removable units barely move during training and can be dropped without hurting accuracy much",
   _claim_removable),
  ("3.3", "Trained layers converge to a low-complexity solution: a few eigenvalues leave the Marchenko-Pastur bulk",
   _claim_spikes),
  ("3.3", "The elbow k of the first dense layer is near the number of classes (10)", _claim_elbow),
  ("3.3", "The deeper the model, the smaller the accuracy drop a - a_proj of the rank-k replacement", _claim_depth),
  ("3.3", "VGG19's first dense layer keeps almost all of its norm at rank k (its noise is suppressed)",
   _claim_vgg_norm),
)


def claims(records: dict) -> list[dict]:
  """Every claim of CLAIMS with the numbers of this run that test it and the computed verdict."""
  out = []
  for section, text, test in CLAIMS:
    tested = test(records)
    if tested is None:
      out.append({"section": section, "claim": text, "evidence": "the stages it needs were not run", "verdict": UNTESTABLE})
    else:
      ok, evidence = tested
      out.append({"section": section, "claim": text, "evidence": evidence, "verdict": HOLDS if ok else FAILS})
  return out


# ----------------------------------------------------------------------------- blocks -> HTML and Markdown


def _table(header, rows, table_id=None):
  return ("table", [str(h) for h in header], [[str(c) for c in row] for row in rows], table_id)


def _pm(values, fmt=".2f", scale=1.0):
  v = scale * np.asarray(values, np.float64)
  return f"{v.mean():{fmt}} ± {v.std():{fmt}}" if v.size > 1 else f"{v.mean():{fmt}}"


def _architecture(layers) -> str:
  parts = []
  for layer in layers:
    text = f"{layer['kind']} {layer['features']}" + (", pool" if layer["after"] == "pool" else "")
    parts.append(("avg-pool, " if layer["before"] == "gap" else "") + text)
  return "; ".join(parts)


def blocks(records: dict, provenance: dict, related: dict | None = None) -> list[tuple]:
  """The page as a list of blocks: ("h", level, text), ("p", text), ("banner", text), ("img", path, alt),
  ("link", path, text), table blocks."""
  out: list[tuple] = []
  trained = {s.split(".")[0]: r["result"] for s, r in records.items() if s.endswith(".train")}
  datasets = sorted({f"{t['dataset']['name']}, {t['dataset']['source']}" for t in trained.values()})
  out += [("h", 1, "Sources of Redundancy in Neural Networks: the report's evidence, rebuilt"),
          ("p", f"Profile **{provenance['profile']}**: {provenance['profile_note']}." + (
            " Seeds trained: " + ", ".join(f"{m} {t['seeds']}" for m, t in trained.items()) + "." if trained else "")),
          ("banner", "DATA: " + ("; ".join(datasets) if datasets else "no model trained yet") +
           ". The report used MNIST (LeNet) and CIFAR-10 (the conv nets); see Provenance.")]

  out.append(("h", 2, "Figure 1: the models"))
  if trained:
    rows = []
    for model, t in trained.items():
      shape = "x".join(map(str, t["dataset"]["image_shape"]))
      rows.append([model, _architecture(t["layers"]), f"{t['parameters']:,} / {t['conv_parameters']:,} ({shape})",
                   f"{t['steps']:,} / {t['batch_size']} (recipe {t['recipe_steps']:,})",
                   f"{t['optimizer']} {t['learning_rate']:g}", f"{t['width']:g}", t["seeds"],
                   _pm(t["test_accuracy"], scale=100), f"{np.mean(t['best_step']):,.0f}"])
    out.append(_table(["Network", "Layers", "All / conv parameters (input)", "Iterations / batch", "Optimizer",
                       "Width", "Seeds", "Test accuracy (%)", "Kept iteration (mean)"], rows))
  else:
    out.append(("p", "No training stage has run."))

  out.append(("h", 2, "Figure 2: pruning criteria, no retraining"))
  for model in ("lenet", "conv2"):
    rec = records.get(f"{model}.prune")
    if rec:
      r = rec["result"]
      out.append(("img", r["figure"], f"Figure 2, {model}: accuracy and loss against units removed"))
      out.append(("p", f"{model}, {r['config']['examples']:,} test images; random: mean ± std over its permutations."))
  if not any(f"{m}.prune" in records for m in ("lenet", "conv2")):
    out.append(("p", "Not run at this call (stages lenet.prune, conv2.prune)."))

  out.append(("h", 2, "Figures 3 and 4: training dynamics"))
  for stage, caption in (("conv2.dynamics", "Figure 3: Conv-2 fc1 at initialisation and after convergence"),
                         ("vgg19.dynamics", "Figure 4: the last convolutional layer of VGG19")):
    rec = records.get(stage)
    if rec:
      d = rec["result"]
      width = trained.get(stage.split(".")[0], {}).get("width", 1.0)
      out.append(("img", d["figure"], caption))
      out.append(("p", f"{caption}: {d['units']} units (width {width:g}), {d['frames']} snapshots, edges above cosine "
                       f"{d['threshold_cosine']:.3f}."))
      out.append(("link", d["viewer"], f"Interactive viewer ({stage.split('.')[0]} {d['layer']})"))
    else:
      out.append(("p", f"{caption}: not run (stage {stage})."))

  out.append(("h", 2, "Figure 5: re-sampling the classifier"))
  rec = records.get("conv2.resample")
  if rec:
    out.append(("p", "Two Conv-2 runs share the initialisation of every layer and the data order; only the "
                     "classifier is re-sampled with another seed. Units are matched by index and by the best "
                     "one-to-one matching on cosine; graphs at the first run's threshold."))
    rows = []
    for layer, c in rec["result"]["layers"].items():
      a, b = c["runs"]
      rows.append([layer, c["units"], f"{c['same_unit_cosine']:.3f}", f"{c['matched_cosine']:.3f}",
                   f"{100 * c['matched_to_self']:.0f}%", f"{c['init_to_trained_cosine']:.3f}",
                   f"{c['edge_jaccard']:.2f}", f"{a['edges']} / {b['edges']}", f"{a['components']} / {b['components']}",
                   f"{a['largest_component']} / {b['largest_component']}",
                   f"{a['repeated_units']} / {b['repeated_units']}"])
    out.append(_table(["Layer", "Units", "Cosine, same unit", "Cosine, best matching", "Matched to itself",
                       "Cosine init -> trained (run 1)", "Edge Jaccard", "Edges", "Components", "Largest component",
                       "Repeated units"], rows, "figure5"))
    for layer, c in rec["result"]["layers"].items():
      out.append(("img", c["figure"], f"Figure 5, {layer}: both runs"))
      out.append(("link", c["viewer"], f"Interactive viewer, both runs ({layer})"))
  else:
    out.append(("p", "Not run (stage conv2.resample)."))

  out.append(("h", 2, "Figures 6 and 7: spectra against Marchenko-Pastur, residuals and the elbow"))
  any_spectra = False
  for model in ("lenet", "conv2", "conv6", "vgg19"):
    rec = records.get(f"{model}.subspace")
    if rec:
      any_spectra = True
      esd, residual = rec["result"]["figures"]
      out.append(("img", esd, f"ESD of {model} at initialisation and trained"))
      out.append(("img", residual, f"Residual curves of {model} with the elbow k"))
  if not any_spectra:
    out.append(("p", "Not run (the subspace stages)."))

  out.append(("h", 2, "Figure 8: low-rank replacement of the first dense layer"))
  rows = _rows(records)
  if rows:
    lines = [l for l in table_markdown(list(rows.values())).splitlines() if not l.startswith("|---")]
    cells = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
    out.append(_table(cells[0], cells[1:], "figure8"))
  else:
    out.append(("p", "Not run (the subspace stages)."))

  out.append(("h", 2, "Claims"))
  out.append(("p", "Each claim of the report's section 3 with the numbers of this run that test it; every verdict "
                   "is computed from them (redundancy_jax/report.py)."))
  out.append(_table(["Section", "Claim", "Numbers from this run", "Verdict"],
                    [[c["section"], c["claim"], c["evidence"], c["verdict"]] for c in claims(records)], "claims"))

  out += related_blocks(related or {})

  out.append(("h", 2, "Provenance"))
  prov = [["profile", provenance["profile"]], ["command", provenance["command"]],
          ["git commit", provenance["commit"] + (" (with uncommitted changes)" if provenance["uncommitted_changes"] else "")],
          ["devices", f"{provenance['backend']}: {', '.join(provenance['devices'])}"], ["machine", provenance["machine"]],
          ["versions", ", ".join(f"{k} {v}" for k, v in provenance["versions"].items())],
          ["written", provenance["written"]]]
  for model, t in trained.items():
    d = t["dataset"]
    files = "; ".join(f"{os.path.basename(f['path'])} sha256 {f['sha256'][:12]}…" for f in d.get("files", []))
    sizes = "/".join(f"{v:,}" for v in d["sizes"].values())
    prov.append([f"data ({model})", f"{d['name']}, {d['source']}, train/validation/test {sizes}" +
                 (f"; {files}" if files else "")])
  out.append(_table(["", ""], prov))
  stage_rows = [[s, f"{r['seconds']:.1f}", r.get("finished", ""),
                 f"{r['result']['steps']:,} of {r['result']['recipe_steps']:,} recipe steps, {r['result']['seeds']} seed(s), "
                 f"{r['result']['steps_per_second']:.1f} steps/s" if s.endswith(".train") else ""]
                for s, r in records.items()]
  out.append(_table(["Stage", "Wall time (s)", "Finished", "Training"], stage_rows, "stages"))
  return out


RELATED = {  # experiment: (title, its script)
  "lottery": ("Lottery tickets (Frankle and Carbin)", "experiments.lottery"),
  "clustering": ("Filter clustering and XORD (Brutzkus and Globerson)", "experiments.clustering"),
  "teacher_student": ("Teacher-student (Goldt et al.)", "experiments.teacher_student"),
  "width": ("Width and distance to initialisation (Neyshabur et al.)", "experiments.width"),
}


def related_headlines(name: str, results: dict) -> list[dict]:
  """The headline(s) a related-work script computed, as a list."""
  found = results.get("headlines") or [results["headline"]]
  return [h for h in found if h]


def related_blocks(related: dict) -> list[tuple]:
  """Section 2 of the report as experiments: each related-work script's headline verdicts and figure,
  from its own results.json ({name: {"results", "figure" (relative path), "source"}}); settings as run."""
  out: list[tuple] = [("h", 2, "Related work (report section 2)")]
  rows = []
  for name, (title, script) in RELATED.items():
    entry = related.get(name)
    if entry is None:
      rows.append([title, f"not run (python -m {script})", "", ""])
      continue
    cfg = entry["results"]["config"]
    settings = ", ".join(f"{k}={cfg[k]}" for k in ("model", "dataset", "quick", "num_seeds", "steps", "rounds",
                                                    "input_dim", "widths", "ks") if k in cfg)
    for h in related_headlines(name, entry["results"]):
      rows.append([title, h["claim"], h["verdict"], settings])
  out.append(("p", "Each row is the verdict its script computed from its own run (results.json beside each figure); "
                   "the settings column says how that run was made."))
  out.append(_table(["Experiment", "Claim", "Verdict", "Settings"], rows, "related"))
  for name, (title, _) in RELATED.items():
    if name in related:
      out.append(("img", related[name]["figure"], f"{title} ({related[name]['source']})"))
  return out


def _inline_html(text: str) -> str:
  parts = html.escape(text).split("**")
  return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def to_markdown(page: list[tuple]) -> str:
  lines = []
  for block in page:
    kind = block[0]
    if kind == "h":
      lines += ["#" * block[1] + " " + block[2], ""]
    elif kind == "p":
      lines += [block[1], ""]
    elif kind == "banner":
      lines += [f"> **{block[1]}**", ""]
    elif kind == "img":
      lines += [f"![{block[2]}]({block[1]})", ""]
    elif kind == "link":
      lines += [f"[{block[2]}]({block[1]})", ""]
    elif kind == "table":
      _, header, rows, _ = block
      esc = lambda c: c.replace("|", "\\|")
      lines += ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
      lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows] + [""]
  return "\n".join(lines)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left}img{max-width:100%;border:1px solid #eee}.holds{background:#e3f6e3}
.does-not-hold{background:#fbe3e3}.not-testable-at-this-profile{background:#f3f3f3}
.banner{font-weight:bold;font-size:1.15em;background:#fff4d6;border-left:6px solid #e0a800;padding:0.6em 1em}"""


# Script errors and images that failed or loaded empty, left as data-* attributes for the page's test.
_STATUS = """<div id="status" data-ready="0"></div>
<script>
var pageErrors = 0;
window.addEventListener("error", function () { pageErrors++; }, true);
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) if (images[i].complete && images[i].naturalWidth > 0) loaded++;
  var st = document.getElementById("status").dataset;
  st.images = images.length; st.loaded = loaded; st.errors = pageErrors; st.ready = "1";
});
</script>"""


def to_html(page: list[tuple]) -> str:
  body = []
  for block in page:
    kind = block[0]
    if kind == "h":
      body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
    elif kind == "p":
      body.append(f"<p>{_inline_html(block[1])}</p>")
    elif kind == "banner":
      body.append(f'<p class="banner">{html.escape(block[1])}</p>')
    elif kind == "img":
      body.append(f'<figure><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}">'
                  f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    elif kind == "link":
      body.append(f'<p><a href="{html.escape(block[1])}">{html.escape(block[2])}</a></p>')
    elif kind == "table":
      _, header, rows, table_id = block
      attr = f' id="{table_id}"' if table_id else ""
      head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
      cls = lambda c: f' class="{c.replace(" ", "-")}"' if c in (HOLDS, FAILS, UNTESTABLE) else ""
      trs = "".join("<tr>" + "".join(f"<td{cls(c)}>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
      body.append(f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
  body.append(_STATUS)
  title = html.escape(page[0][2]) if page and page[0][0] == "h" else "report"
  return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
          f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write(root: str, records: dict, provenance: dict, related: dict | None = None) -> str:
  """Writes <root>/index.html, <root>/report.md and <root>/claims.json; returns the page's path."""
  page = blocks(records, provenance, related)
  storage.atomic_write(os.path.join(root, "report.md"), lambda f: f.write(to_markdown(page).encode()))
  storage.write_json(os.path.join(root, "claims.json"), {
    "claims": claims(records), "provenance": provenance,
    "related": {n: related_headlines(n, e["results"]) for n, e in (related or {}).items()}})
  path = os.path.join(root, "index.html")
  storage.atomic_write(path, lambda f: f.write(to_html(page).encode()))
  return path

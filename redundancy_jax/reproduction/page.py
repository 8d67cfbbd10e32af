"""The reproduction page: Figures 1-8 as numbered in the report, the claims with their computed verdicts,
the related work and provenance, as one list of typed blocks rendered by two Jinja2 templates
(templates/report.html.j2, templates/report.md.j2) into one offline page and its Markdown twin.

  page = write(root, records, provenance)     # <root>/index.html, <root>/report.md, <root>/claims.json
"""

from __future__ import annotations

import os

import numpy as np

from redundancy_jax.core import console, data, storage
from redundancy_jax.core.verdicts import SIGMAS, WITHIN, Verdict
from redundancy_jax.reproduction.blocks import Block, _h, _img, _link, _p, _table, render  # noqa: F401 (Block: re-exported)
from redundancy_jax.analyses import classes, criteria
from redundancy_jax.analyses.subspace_table import table_lines
from redundancy_jax.reproduction.claims import claims, figure8_rows, related_verdicts

RELATED_TITLES = {
  "lottery": "Lottery tickets (Frankle and Carbin)",
  "clustering": "Filter clustering and XORD (Brutzkus and Globerson)",
  "teacher_student": "Teacher-student (Goldt et al.)",
  "width": "Width and distance to initialisation (Neyshabur et al.)",
}


def _pm(values, fmt=".2f", scale=1.0):
  v = scale * np.asarray(values, np.float64)
  return f"{v.mean():{fmt}} ± {v.std():{fmt}}" if v.size > 1 else f"{v.mean():{fmt}}"


def _architecture(layers) -> str:
  parts = []
  for layer in layers:
    text = f"{layer['kind']} {layer['features']}" + (", pool" if layer["after"] == "pool" else "")
    parts.append(("avg-pool, " if layer["before"] == "gap" else "") + text)
  return "; ".join(parts)


def _figure1(trained: dict) -> list[Block]:
  out = [_h("Figure 1: the models")]
  if not trained:
    return out + [_p("No training stage has run.")]
  rows = []
  for model, t in trained.items():
    shape = "x".join(map(str, t["dataset"]["image_shape"]))
    rows.append([model, _architecture(t["layers"]), f"{t['parameters']:,} / {t['conv_parameters']:,} ({shape})",
                 f"{t['steps']:,} / {t['batch_size']} (recipe {t['recipe_steps']:,})",
                 f"{t['optimizer']} {t['learning_rate']:g}", f"{t['width']:g}", t["seeds"],
                 _pm(t["test_accuracy"], scale=100), f"{t['dataset']['sizes']['test']:,}",
                 f"{np.mean(t['best_step']):,.0f}"])
  out.append(_table(["Network", "Layers", "All / conv parameters (input)", "Iterations / batch", "Optimizer", "Width",
                     "Seeds", "Test accuracy (%)", "Test images", "Kept iteration (mean)"], rows))
  out.append(_p("Test accuracy here is the mean ± std over the seeds on the whole test split. The analyses below "
                "use the number of test images they state: Figure 8 averages over every seed, while Figures 2, 6 "
                "and 7 show one network (replica 0, seed 0), so their unpruned accuracies differ from this one."))
  return out


def _one_network(model: str, trained: dict) -> str:
  """Which network a figure of one replica shows (the analyses' replica 0)."""
  seeds = trained.get(model, {}).get("seeds")
  return f"replica 0 (seed 0) of the {seeds} trained" if seeds else "replica 0 (seed 0)"


def _figure2(records, trained) -> list[Block]:
  out = [_h("Figure 2: pruning criteria, no retraining")]
  for model in ("lenet", "conv2"):
    rec = records.get(f"{model}.prune")
    if rec:
      r = rec["result"]
      base = 100 * next(iter(r["layers"].values()))["base_accuracy"]
      row = figure8_rows(records).get(model)
      against = (f" (Figure 8's test accuracy a, {100 * row['a_mean']:.2f} ± {100 * row['a_std']:.2f}%, is the "
                 f"mean ± std over its {row['num_seeds']} seeds on the same images)" if row else "")
      out.append(_img(r["figure"], f"Figure 2, {model}: accuracy and loss against units removed, on the first "
                                   f"{r['config']['examples']:,} test images, of {_one_network(model, trained)}: "
                                   f"unpruned {base:.2f}% on these images{against}; random: mean ± std over its "
                                   f"permutations{_field_panels(r)}"))
  if len(out) == 1:
    out.append(_p("Not run at this call (stages lenet.prune, conv2.prune)."))
  return out


def _field_panels(r: dict) -> str:
  """The caption's words on the field's panels, when the sweep ran criteria beyond the report's."""
  swept = {c for layer in r["layers"].values() for c in layer["criteria"]}
  if swept <= set(criteria.REPORT_CRITERIA):
    return ""
  return (f". Left of each pair: the report's criteria; right: the field's ({', '.join(sorted(swept - set(criteria.REPORT_CRITERIA)))}; "
          f"the data-aware ones read the first {r['config'].get('criteria_examples', criteria.DATA_EXAMPLES):,} training "
          f"images, never these test images), with max_mag (thin) and random for reference (DEFINITIONS.md section 2)")


def _figures34(records, trained) -> list[Block]:
  out = [_h("Figures 3 and 4: training dynamics"),
         _p("Nodes are units, sized by their norm; edges join units whose weight vectors have a cosine above the "
            "threshold. Orange nodes are **repeated** units: their activations on test images correlate (|r| >= 0.5) "
            "with another unit's, which is about activations, not weights, so a repeated unit needs no edge.")]
  for stage, title in (("conv2.dynamics", "Figure 3: Conv-2 fc1 at initialisation and after convergence"),
                       ("vgg19.dynamics", "Figure 4: the last convolutional layer of VGG19")):
    rec = records.get(stage)
    if rec:
      d = rec["result"]
      width = trained.get(stage.split(".")[0], {}).get("width", 1.0)
      out.append(_img(d["figure"], f"{title}: {d['units']} units (width {width:g}), {d['frames']} snapshots, edges "
                                   f"above cosine {d['threshold_cosine']:.3f}"))
      out.append(_link(d["viewer"], f"Interactive viewer ({stage.split('.')[0]} {d['layer']})"))
    else:
      out.append(_p(f"{title}: not run (stage {stage})."))
  return out


def _figure5(records) -> list[Block]:
  out = [_h("Figure 5: re-sampling the classifier")]
  rec = records.get("conv2.resample")
  if not rec:
    return out + [_p("Not run (stage conv2.resample).")]
  out.append(_p("Two Conv-2 runs share the initialisation of every layer and the data order; only the classifier is "
                "re-sampled with another seed. Units are matched by index and by the best one-to-one matching on "
                "cosine; graphs at the first run's threshold."))
  rows = []
  for layer, c in rec["result"]["layers"].items():
    a, b = c["runs"]
    rows.append([layer, c["units"], f"{c['same_unit_cosine']:.3f}", f"{c['matched_cosine']:.3f}",
                 f"{100 * c['matched_to_self']:.0f}%", f"{c['init_to_trained_cosine']:.3f}", f"{c['edge_jaccard']:.2f}",
                 f"{a['edges']} / {b['edges']}", f"{a['components']} / {b['components']}",
                 f"{a['largest_component']} / {b['largest_component']}", f"{a['repeated_units']} / {b['repeated_units']}"])
  out.append(_table(["Layer", "Units", "Cosine, same unit", "Cosine, best matching", "Matched to itself",
                     "Cosine init -> trained (run 1)", "Edge Jaccard", "Edges", "Components", "Largest component",
                     "Repeated units"], rows, "figure5"))
  for layer, c in rec["result"]["layers"].items():
    out += [_img(c["figure"], f"Figure 5, Conv-2 layer {layer}: the main run (top) and the run with the classifier "
                              f"re-sampled (bottom), replica 0 of each"),
            _link(c["viewer"], f"Interactive viewer, both runs ({layer})")]
  return out


def _count_row(model: str, layer: str, a: dict) -> list:
  """One layer's outlier counts with their control and sensitivity ("–" where the record predates them)."""
  t, control = a["trained"], a.get("control", {}).get("spikes")
  get = lambda k: t.get(k, "–")
  return [model, layer, f"{t['m']} x {t['n']}", t["spikes"], a["init"]["spikes"],
          f"{control[0]:.2f} ± {control[1]:.2f}" if control else "–", t["spikes_tw"], get("spikes_second_fit"),
          get("near_edge"), t["elbow"]]


def _figures678(records, trained) -> list[Block]:
  out, counts = [_h("Figures 6 and 7: spectra against Marchenko-Pastur, residuals and the elbow")], []
  for model in ("lenet", "conv2", "conv6", "vgg19"):
    rec = records.get(f"{model}.subspace")
    if rec:
      esd, residual = rec["result"]["figures"]
      one = _one_network(model, trained)
      elbows = ", ".join(f"elbow k of {layer} = {a['trained']['elbow']}" for layer, a in rec["result"]["layers"].items())
      row = rec["result"]["row"]
      mean = f" (Figure 8: fc1's mean {row['k_mean']:.3g} over {row['num_seeds']} seeds)" if "k_mean" in row else ""
      out += [_img(esd, f"ESD of {model} at initialisation and trained, {one}"),
              _img(residual, f"Residual curves of {model} with the elbow k, {one}: {elbows}{mean}")]
      counts.extend(_count_row(model, layer, a) for layer, a in rec["result"]["layers"].items())
  if len(out) == 1:
    out.append(_p("Not run (the subspace stages)."))
  elif counts:
    out.append(_p("The outlier counts and how far they depend on the bulk fit (DEFINITIONS.md section 4): the "
                  "count above the fitted λ+, at initialisation and over the initialiser's draws (the control), "
                  "above the Tracy-Widom margin, under the second fit (the median matched), and the eigenvalues "
                  "within 1% of the fitted λ+ (a count that moves with the fit is borderline)."))
    out.append(_table(["Network", "Layer", "m x n", "Outliers > λ+", "At initialisation", "Initialiser draws",
                       "> TW margin", "Second fit", "Within 1% of λ+", "Elbow k"], counts, "outliers"))
  out.append(_h("Figure 8: low-rank replacement of the first dense layer"))
  rows = figure8_rows(records)
  if rows:
    header, body = table_lines(list(rows.values()))
    out.append(_p("One column per model; a ± is the standard deviation over the model's seeds (its trained "
                  "replicas), on the test images stated (the report's separate row for a − a_proj is its ±)."))
    out.append(_table(header, body, "figure8"))
  else:
    out.append(_p("Not run (the subspace stages)."))
  return out


VERDICT_NOTE = (
  "**Effect**: the claim's statistic in the unit named, signed so that a positive value supports the claim, measured "
  "on the layer or run named (where the claim must hold for several, the smallest effect). **Control**: one standard "
  "deviation of the same statistic where the claim's cause is absent (DEFINITIONS.md section 7). A claim holds only "
  f"when its effect exceeds {SIGMAS:g} of those standard deviations, besides its own threshold; the last column "
  "but one shows that comparison. Claims of equality (two criteria agree, a rank keeps the accuracy) measure a "
  "distance instead, which must stay within the claim's tolerance: there a smaller effect supports the claim, and "
  "the control's spread shows the noise beside it.")


def _effect(v: Verdict) -> str:
  """The verdict's effect as the page shows it: value, unit and where it was measured."""
  if v.effect is None:
    return "–"
  text = (f"{v.effect:.3g}" if v.test == WITHIN else f"{v.effect:+.3g}") + (f" {v.unit}" if v.unit else "")
  return text + (f"; on {v.measured_on}" if v.measured_on else "")


def _control(v: Verdict) -> str:
  return "–" if v.control_spread is None else f"{v.control_spread:.3g}" + (f" {v.unit}" if v.unit else "")


def _verdict_table(verdicts: list[Verdict], first: str, table_id: str, settings: dict | None = None) -> Block:
  header = [first, "Claim", "Numbers from this run", "Rule", "Effect (unit; measured on)",
            "Control: 1 standard deviation", f"Effect against {SIGMAS:g} standard deviations", "Verdict"]
  rows = [[settings[i] if settings else v.section, v.claim, v.evidence, v.rule, _effect(v), _control(v),
           v.comparison() or ("–" if v.effect is None else "see the Rule column"), v.verdict]
          for i, v in enumerate(verdicts)]
  return _table(header, rows, table_id)


def _open_question(records) -> list[Block]:
  """The report's open question (section 3.3): the class-subset runs' figure, table and verdicts."""
  out = [_h("The report's open question (section 3.3)"),
         _p("The report finds the elbow k of every first dense layer at 10, CIFAR-10's number of classes, and asks "
            "whether this holds for another number of classes. Replicas trained on random C-class subsets "
            "(python -m experiments.classes) answer it: per C, the outliers of W W^T above the fitted λ+ and the "
            "Tracy-Widom margin, the elbows of W and of W − W0 (dotted: at initialisation, the control), and the "
            "accuracy kept by rank-k replacements.")]
  stages = [s for s in records if s.endswith(".classes")]
  if not stages:
    return out + [_p("Not run (the classes stages).")]
  for stage in stages:
    r = records[stage]["result"]
    out.append(_img(r["figure"], r["title"]))
    for layer, rows in r["summary"].items():
      header, body = classes.table_lines(rows)
      out += [_p(f"{r['model']} {layer} (points lost: with W_k / with W0 + P_k(W − W0); NK = Nagarajan-Kolter):"),
              _table(header, body, f"{stage.replace('.', '_')}_{layer}")]
    out.append(_verdict_table([Verdict.from_json(v) for v in r["headlines"]], "Section", stage.replace(".", "_")))
  return out


def _related(records) -> list[Block]:
  out = [_h("Related work (report section 2)")]
  verdicts = related_verdicts(records)
  if not verdicts:
    return out + [_p("Not run at this profile's call: --stages=related runs the four related-work experiments "
                     "(lottery tickets, filter clustering, teacher-student, width) into this page.")]
  out.append(_p("Each verdict is computed by the experiment's own run (its results.json); the first column says how "
                "that run was made. These verdicts apply their papers' criteria (the Rule column) alone: their effect "
                "and control are stated beside them for scale, not as part of the rule."))
  rows, labels = [], []
  for name, vs in verdicts.items():
    settings = records[f"related.{name}"]["result"]["settings"]
    for v in vs:
      rows.append(v)
      labels.append(f"{RELATED_TITLES[name]}: {settings}")
  out.append(_verdict_table(rows, "Experiment", "related", labels))
  for name in verdicts:
    r = records[f"related.{name}"]["result"]
    out.append(_img(r["figure"], f"{RELATED_TITLES[name]} ({r['workdir']})"))
  missing = [RELATED_TITLES[n] for n in RELATED_TITLES if n not in verdicts]
  if missing:
    out.append(_p("Not run at this call: " + "; ".join(missing) + "."))
  return out


NOT_RECORDED = "not recorded (the stage finished before the page recorded it: delete its stages/*.json to rerun it)"


def _stage_data(stage: str, record: dict, trained: dict) -> list[str]:
  """The data a stage ran on, one `data.label` each: its own record's, or the training stage's it analyses."""
  group, r = stage.split(".")[0], record["result"]
  if group == "related":
    return r.get("data", [NOT_RECORDED])
  if "dataset" in r:  # training, pruning and the open question record theirs
    return [data.label(r["dataset"])]
  return [data.label(trained[group]["dataset"]) if group in trained else f"that of {group}.train (not in this workdir)"]


def _training(stage: str, r: dict) -> str:
  """The training a stage did: steps, replicas and speed."""
  t = r if stage.endswith(".train") else r.get("training")
  if t is None:
    return NOT_RECORDED if stage.endswith((".resample", ".classes")) else (
      "its own runs (see Related work)" if stage.startswith("related.") else "none: analyses the trained model")
  return (f"{t['steps']:,} of {t['recipe_steps']:,} recipe steps, {t['seeds']} replica(s), "
          f"{t['steps_per_second']:.1f} steps/s")


def _users(stages: list[str]) -> str:
  """"lenet, open question (lenet), conv2; related work: lottery, width" for those stages."""
  models = [f"open question ({s.split('.')[0]})" if s.endswith(".classes") else s.split(".")[0]
            for s in stages if not s.startswith("related.")]
  related = [s.split(".")[1] for s in stages if s.startswith("related.")]
  return "; ".join(filter(None, [", ".join(dict.fromkeys(models)),
                                 "related work: " + ", ".join(related) if related else ""]))


def _provenance(records, provenance, trained) -> list[Block]:
  total = sum(r["seconds"] for r in records.values())
  ran = provenance.get("stages_this_call", [])
  prov = [["profile", provenance["profile"]],
          ["command typed", provenance.get("typed") or "none: the reproduction was called from Python (stages.run)"],
          ["command with every option", provenance["command"]],
          ["time", f"{console.duration(provenance.get('wall_seconds_this_call', 0))} for this call ({len(ran)} "
                   f"stage(s) run or reused); {console.duration(total)} in all: the sum of the stages' wall times "
                   f"below, each from the call that ran it"],
          ["git commit", provenance["commit"] + (" (with uncommitted changes)" if provenance["uncommitted_changes"] else "")],
          ["devices", f"{provenance['backend']}: {', '.join(provenance['devices'])}"], ["machine", provenance["machine"]],
          ["versions", ", ".join(f"{k} {v}" for k, v in provenance["versions"].items())],
          ["written", provenance["written"]]]
  described = {data.label(d): d for d in [t["dataset"] for t in trained.values()] +
               [r["result"]["dataset"] for s, r in records.items() if "dataset" in r["result"]]}
  for label, d in described.items():
    files = "; ".join(f"{os.path.basename(f['path'])} sha256 {f['sha256'][:12]}…" for f in d.get("files", []))
    sizes = "/".join(f"{v:,}" for v in d["sizes"].values())
    prov.append([f"data: {label}", f"train/validation/test {sizes}" + (f"; {files}" if files else "")])
  stage_rows = [[s, "; ".join(_stage_data(s, r, trained)), f"{r['seconds']:.1f}", r.get("finished", ""),
                 _training(s, r["result"])] for s, r in records.items()]
  stage_rows.append(["total", "", f"{total:.1f}", "", ""])
  return [_h("Provenance"), _table(["What", "Value"], prov, "provenance"),
          _table(["Stage", "Data", "Wall time (s)", "Finished", "Training"], stage_rows, "stages")]


def _banner(records, trained) -> Block:
  """Every stage's data, with the stages that used it."""
  uses = {}
  for stage, record in records.items():
    for label in _stage_data(stage, record, trained):
      uses.setdefault(label, []).append(stage)
  text = " | ".join(f"{label} ({_users(stages)})" for label, stages in uses.items()) or "no stage has run yet"
  return Block("banner", f"DATA: {text}. The report used MNIST (LeNet) and CIFAR-10 (the conv nets); Provenance "
                         "gives each stage's data.")


def _below_recipe(records) -> Block:
  """Which trainings ran below the report's recipe (fewer steps or a narrower network), or that none did."""
  below = []
  for stage, r in records.items():
    t = r["result"] if stage.endswith(".train") else r["result"].get("training") if stage.endswith(".classes") else None
    if not t:
      continue
    width = r["result"].get("width", 1.0) if stage.endswith(".train") else 1.0
    if t["steps"] < t["recipe_steps"] or width != 1.0:
      what = f"{t['steps']:,} of {t['recipe_steps']:,} steps" + (f", width {width:g}" if width != 1.0 else "")
      name = stage.split(".")[0] + (" (open question)" if stage.endswith(".classes") else "")
      below.append(f"{name}: {what}")
  if not below:
    return _p("Every training on this page ran at the report's recipe (DEFINITIONS.md section 1).")
  return _p("**Below the report's recipe** (DEFINITIONS.md section 1), so not the report's numbers: " + "; ".join(below)
            + ". Every figure, table and claim that reads these models inherits this.")


def blocks(records: dict, provenance: dict) -> list[Block]:
  """The whole page as blocks, from the stage records and the provenance."""
  trained = {s.split(".")[0]: r["result"] for s, r in records.items() if s.endswith(".train")}
  out = [_h("Sources of Redundancy in Neural Networks: the report's evidence, rebuilt", 1),
         _p(f"Profile **{provenance['profile']}**: {provenance['profile_note']}." + (
           " Seeds trained: " + ", ".join(f"{m} {t['seeds']}" for m, t in trained.items()) + "." if trained else "")),
         _below_recipe(records), _banner(records, trained)]
  out += _figure1(trained) + _figure2(records, trained) + _figures34(records, trained) + _figure5(records)
  out += _figures678(records, trained)
  out += [_h("Claims"), _p("Each claim of the report's section 3, then the one beyond it (section 'beyond': do the "
                           "field's data-aware criteria beat the report's best?), with the numbers of this run that "
                           "test it and the rule that decides it; every verdict is computed "
                           "(redundancy_jax/reproduction/claims.py)."),
          _p(VERDICT_NOTE), _verdict_table(claims(records), "Section", "claims")]
  return out + _open_question(records) + _related(records) + _provenance(records, provenance, trained)


def write(root: str, records: dict, provenance: dict) -> str:
  """Writes <root>/index.html, <root>/report.md and <root>/claims.json; returns the page's path."""
  page = blocks(records, provenance)
  storage.atomic_write(os.path.join(root, "report.md"), lambda f: f.write(render(page, "report.md.j2").encode()))
  storage.write_json(os.path.join(root, "claims.json"), {
    "experiment": "reproduce", "claims": [v.to_json() for v in claims(records)], "provenance": provenance,
    "related": {n: [v.to_json() for v in vs] for n, vs in related_verdicts(records).items()}})
  path = os.path.join(root, "index.html")
  storage.atomic_write(path, lambda f: f.write(render(page, "report.html.j2").encode()))
  return path

"""The report's Figure 2: test accuracy versus units removed, one line per criterion; with criteria of both
of the registry's panels (the report's, the field's), one panel of each per layer, the report's best
weight-based criterion (max_mag) and random pruning drawn in both for reference."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from redundancy_jax.analyses import criteria  # noqa: E402
from redundancy_jax.core import data  # noqa: E402
from redundancy_jax.plots import save  # noqa: E402

REFERENCE = "max_mag"  # drawn thin in the field's panel: the report's best weight-based criterion


def legend_label(name: str, extra: str = "") -> str:
  """A criterion's legend entry: its name and what it does (the registry's help)."""
  return textwrap.fill(f"{name}{extra}: {criteria.help_text(name)}", 100, subsequent_indent="    ")


def panels(layer_result: dict) -> list[str]:
  """The registry's panels the layer's criteria fall in, in registry order (an unregistered name: the
  field's)."""
  used = {criteria.panel_of(c) for c in layer_result["criteria"]}
  return [p for p in (criteria.REPORT, criteria.FIELD) if p in used] or [criteria.REPORT]


def accuracy_curves(ax, layer_result: dict, title: str, split: str = "test", metric: str = "accuracy",
                    panel: str | None = None) -> None:
  """Draws one layer's curves of `metric` ("accuracy" or "loss"): deterministic criteria as lines (with
  `panel`, those of that panel, and in the field's panel the report's max_mag thin for reference), random
  as mean with a 1-std band, and the unpruned network's value as a dotted line."""
  scale = 100 if metric == "accuracy" else 1
  levels = np.asarray(layer_result["levels"])
  for name, curve in layer_result["criteria"].items():
    own = panel is None or criteria.panel_of(name) == panel
    if not own and not (panel == criteria.FIELD and name == REFERENCE):
      continue
    color, style = criteria.style_of(name)
    ax.plot(levels, scale * np.asarray(curve[metric]), style, color=color, label=legend_label(name),
            lw=1.4 if own else 0.8, alpha=1.0 if own else 0.6)
  rand = layer_result.get("random")
  if rand:
    mean, std = scale * np.asarray(rand[f"{metric}_mean"]), scale * np.asarray(rand[f"{metric}_std"])
    color, style = criteria.style_of("random")
    ax.plot(levels, mean, style, color=color, label=legend_label("random", f" ({rand['seeds']} seeds)"), lw=1.2)
    ax.fill_between(levels, mean - std, mean + std, color=color, alpha=0.3, lw=0)
  base = scale * layer_result[f"base_{metric}"]
  ax.axhline(base, color="black", lw=0.6, ls=":", label=f"unpruned: {base:.2f}{'%' if metric == 'accuracy' else ''}")
  ax.set_xlabel("units removed")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if metric == "accuracy":
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.set_ylim(0, 100)
  else:
    ax.set_ylabel(f"{split} loss (cross-entropy)")
    ax.set_yscale("log")


def legend_entries(results: dict) -> list[str]:
  """Figure 2's legend (every criterion of every layer, each once, in the registry's words), as drawn."""
  fig, ax = plt.subplots()
  for layer_result in results["layers"].values():
    accuracy_curves(ax, layer_result, "")
  labels = list(dict.fromkeys(ax.get_legend_handles_labels()[1]))
  plt.close(fig)
  return labels


def save_figure(results: dict, path_stem: str, *, loss: bool = False) -> list[str]:
  """Figure 2 for every swept layer (a grid when there are several; with `loss`, one column per layer,
  accuracy above loss; with criteria of both of the registry's panels, one panel of each per layer),
  titled with the model, layer and data, the criteria explained in the legend below; writes PNG and PDF."""
  cfg, layers = results["config"], list(results["layers"])
  metrics = ("accuracy", "loss") if loss else ("accuracy",)
  both = max(len(panels(r)) for r in results["layers"].values()) > 1
  kinds = [criteria.REPORT, criteria.FIELD] if both else [None]
  panes = [(layer, metric, panel) for metric in metrics for layer in layers for panel in kinds]
  if loss:  # one column per layer and panel, accuracy above loss
    cols = len(layers) * len(kinds)
  else:
    cols = 2 if both else min(3, len(layers))
  rows = -(-len(panes) // cols)
  labels = legend_entries(results)
  legend_in = 0.145 * sum(label.count("\n") + 1 for label in labels) + 0.25  # one column of 7-point lines
  fig, axes = plt.subplots(rows, cols, figsize=(max(5.2 * cols, 7.0), 3.8 * rows + 0.4 + legend_in), squeeze=False)
  split = cfg.get("split", "test")
  for ax, (layer, metric, panel) in zip(axes.flat, panes):
    r = results["layers"][layer]
    named = "" if "dataset" in results else f"{cfg['model']} "  # the suptitle names the model when it is drawn
    title = f"{named}{layer} ({r['units']} units)" + (f"\n{panel}" if panel else "")
    accuracy_curves(ax, r, title, split, metric, panel)
  for ax in list(axes.flat)[len(panes) :]:
    ax.axis("off")
  if "dataset" in results:
    examples = f", {cfg['examples']:,} images" if "examples" in cfg else ""
    fig.suptitle(f"{cfg['model']} on {data.label(results['dataset'])}: {split} split{examples}", fontsize=9)
  seen: dict[str, object] = {}
  for ax in axes.flat:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      seen.setdefault(label, handle)
  fig.legend(list(seen.values()), list(seen), loc="lower center", fontsize=7, ncol=1, frameon=False)
  fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1 - 0.3 / fig.get_figheight()))  # room for the suptitle
  return save(fig, path_stem, tight=False)

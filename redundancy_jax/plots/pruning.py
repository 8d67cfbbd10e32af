"""The report's Figure 2: test accuracy versus units removed, one line per criterion."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from redundancy_jax.analyses.pruning import CRITERION_HELP  # noqa: E402
from redundancy_jax.core import data  # noqa: E402
from redundancy_jax.plots import save  # noqa: E402

_STYLE = {
  "max_mag": ("tab:blue", "-"),
  "min_mag": ("tab:blue", "--"),
  "max_fp": ("tab:red", "-"),
  "min_fp": ("tab:red", "--"),
  "random": ("tab:gray", "-"),
}


def _legend_label(name: str, extra: str = "") -> str:
  """A criterion's legend entry: its name and what it does (`pruning.CRITERION_HELP`)."""
  return textwrap.fill(f"{name}{extra}: {CRITERION_HELP.get(name, '')}", 100, subsequent_indent="    ")


def accuracy_curves(ax, layer_result: dict, title: str, split: str = "test", metric: str = "accuracy") -> None:
  """Draws one layer's curves of `metric` ("accuracy" or "loss"): deterministic criteria as lines,
  random as mean with a 1-std band, and the unpruned network's value as a dotted line."""
  scale = 100 if metric == "accuracy" else 1
  levels = np.asarray(layer_result["levels"])
  for name, curve in layer_result["criteria"].items():
    color, style = _STYLE.get(name, ("black", "-"))
    ax.plot(levels, scale * np.asarray(curve[metric]), style, color=color, label=_legend_label(name), lw=1.4)
  rand = layer_result.get("random")
  if rand:
    mean, std = scale * np.asarray(rand[f"{metric}_mean"]), scale * np.asarray(rand[f"{metric}_std"])
    color, style = _STYLE["random"]
    ax.plot(levels, mean, style, color=color, label=_legend_label("random", f" ({rand['seeds']} seeds)"), lw=1.2)
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


def save_figure(results: dict, path_stem: str, *, loss: bool = False) -> list[str]:
  """Figure 2 for every swept layer (a grid when there are several; with `loss`, one column per layer,
  accuracy above loss), titled with the model, layer and data, the criteria explained in the legend
  below; writes PNG and PDF."""
  cfg, layers = results["config"], list(results["layers"])
  panels = [(layer, metric) for metric in (("accuracy", "loss") if loss else ("accuracy",)) for layer in layers]
  cols = len(layers) if loss else min(3, len(layers))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(max(5.2 * cols, 7.0), 3.8 * rows + 1.3), squeeze=False)
  split = cfg.get("split", "test")
  for ax, (layer, metric) in zip(axes.flat, panels):
    r = results["layers"][layer]
    accuracy_curves(ax, r, f"{cfg['model']} {layer} ({r['units']} units)", split, metric)
  for ax in list(axes.flat)[len(panels) :]:
    ax.axis("off")
  if "dataset" in results:
    examples = f", {cfg['examples']:,} images" if "examples" in cfg else ""
    fig.suptitle(f"{cfg['model']} on {data.label(results['dataset'])}: {split} split{examples}", fontsize=9)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=1, frameon=False)
  fig.tight_layout(rect=(0, 1.2 / fig.get_figheight(), 1, 1))
  return save(fig, path_stem, tight=False)

"""The report's Figure 2: test accuracy versus units removed, one line per criterion."""

from __future__ import annotations

import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from redundancy_jax import data  # noqa: E402
from redundancy_jax.pruning import CRITERION_HELP  # noqa: E402

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


def accuracy_curves(ax, layer_result: dict, title: str, split: str = "test") -> None:
  """Draws one layer's curves: deterministic criteria as lines, random as mean with a 1-std band, and
  the unpruned accuracy as a dotted line."""
  levels = np.asarray(layer_result["levels"])
  for name, curve in layer_result["criteria"].items():
    color, style = _STYLE.get(name, ("black", "-"))
    ax.plot(levels, 100 * np.asarray(curve["accuracy"]), style, color=color, label=_legend_label(name), lw=1.4)
  rand = layer_result.get("random")
  if rand:
    mean, std = 100 * np.asarray(rand["accuracy_mean"]), 100 * np.asarray(rand["accuracy_std"])
    color, style = _STYLE["random"]
    ax.plot(levels, mean, style, color=color, label=_legend_label("random", f" ({rand['seeds']} seeds)"), lw=1.2)
    ax.fill_between(levels, mean - std, mean + std, color=color, alpha=0.3, lw=0)
  base = 100 * layer_result["base_accuracy"]
  ax.axhline(base, color="black", lw=0.6, ls=":", label=f"unpruned: {base:.2f}%")
  ax.set_xlabel("units removed")
  ax.set_ylabel(f"{split} accuracy (%)")
  ax.set_title(title)
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)


def save_figure(results: dict, path_stem: str) -> list[str]:
  """Figure 2 for every swept layer (a grid when there are several), titled with the model, layer and
  data, the criteria explained in the legend below; writes PNG and PDF."""
  cfg, layers = results["config"], list(results["layers"])
  cols = min(3, len(layers))
  rows = -(-len(layers) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(max(5.2 * cols, 7.0), 3.8 * rows + 1.3), squeeze=False)
  split = cfg.get("split", "test")
  for ax, layer in zip(axes.flat, layers):
    r = results["layers"][layer]
    accuracy_curves(ax, r, f"{cfg['model']} {layer} ({r['units']} units)", split)
  for ax in list(axes.flat)[len(layers) :]:
    ax.axis("off")
  if "dataset" in results:
    examples = f", {cfg['examples']:,} images" if "examples" in cfg else ""
    fig.suptitle(f"{cfg['model']} on {data.label(results['dataset'])}: {split} split{examples}", fontsize=9)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=1, frameon=False)
  fig.tight_layout(rect=(0, 1.2 / fig.get_figheight(), 1, 1))
  os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
  paths = [f"{path_stem}.png", f"{path_stem}.pdf"]
  for p in paths:
    fig.savefig(p, dpi=130)
  plt.close(fig)
  return paths

"""The report's Figure 2: test accuracy versus units removed, one line per criterion."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_STYLE = {
  "max_mag": ("tab:blue", "-"),
  "min_mag": ("tab:blue", "--"),
  "max_fp": ("tab:red", "-"),
  "min_fp": ("tab:red", "--"),
  "random": ("tab:gray", "-"),
}


def accuracy_curves(ax, layer_result: dict, title: str) -> None:
  """Draws one layer's curves: deterministic criteria as lines, random as mean with a 1-std band."""
  levels = np.asarray(layer_result["levels"])
  for name, curve in layer_result["criteria"].items():
    color, style = _STYLE.get(name, ("black", "-"))
    ax.plot(levels, 100 * np.asarray(curve["accuracy"]), style, color=color, label=name, lw=1.4)
  rand = layer_result.get("random")
  if rand:
    mean, std = 100 * np.asarray(rand["accuracy_mean"]), 100 * np.asarray(rand["accuracy_std"])
    color, style = _STYLE["random"]
    ax.plot(levels, mean, style, color=color, label=f"random (mean of {rand['seeds']})", lw=1.2)
    ax.fill_between(levels, mean - std, mean + std, color=color, alpha=0.3, lw=0)
  ax.axhline(100 * layer_result["base_accuracy"], color="black", lw=0.6, ls=":")
  ax.set_xlabel("units removed")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)


def save_figure(results: dict, path_stem: str) -> list[str]:
  """Figure 2 for every swept layer (a grid when there are several); writes PNG and PDF."""
  layers = list(results["layers"])
  cols = min(3, len(layers))
  rows = -(-len(layers) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
  for ax, layer in zip(axes.flat, layers):
    r = results["layers"][layer]
    accuracy_curves(ax, r, f"{results['config']['model']} {layer} ({r['units']} units)")
  for ax in list(axes.flat)[len(layers) :]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path_stem)), exist_ok=True)
  paths = [f"{path_stem}.png", f"{path_stem}.pdf"]
  for p in paths:
    fig.savefig(p, dpi=130)
  plt.close(fig)
  return paths

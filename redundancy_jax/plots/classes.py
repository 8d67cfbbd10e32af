"""Figure of the report's open question: per layer, each spectral count of the trained layer against the
number of classes C (mean ± std over seeds; the same count at initialisation dotted), with the lines
y = C and y = C - 1. Drawn from results.json alone, at most two panels a row (a page shows it unscaled
enough to read), the legend in the panel left free or below."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from redundancy_jax.analyses.classes import STATISTICS  # noqa: E402

COLORS = {"spikes": "tab:blue", "spikes_tw": "tab:purple", "elbow": "tab:green", "update_elbow": "tab:orange"}


def figure(results: dict) -> plt.Figure:
  summary = results["summary"]
  layers = list(summary)
  ncols = min(2, len(layers))
  nrows = math.ceil(len(layers) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False, layout="constrained")
  free = list(axes.flat[len(layers):])
  for ax in free:
    ax.set_axis_off()
  for ax, layer in zip(axes.flat, layers):
    rows = summary[layer]
    C = np.asarray([r["C"] for r in rows], float)
    for stat, label in STATISTICS.items():
      if all(stat in r for r in rows):
        mean, std = (np.asarray([r[stat][i] for r in rows]) for i in (0, 1))
        ax.errorbar(C, mean, yerr=std, marker="o", ms=4, capsize=3, color=COLORS[stat], label=label)
      if all(f"init_{stat}" in r for r in rows):
        ax.plot(C, [r[f"init_{stat}"][0] for r in rows], ":", color=COLORS[stat], alpha=0.7)
    ax.plot(C, C, "k--", lw=1, label="y = C")
    ax.plot(C, C - 1, color="0.5", ls="-.", lw=1, label="y = C − 1")
    ax.set_yscale("symlog", linthresh=1)
    na = " (C eigenvalues: not applicable)" if any("not_applicable" in r for r in rows) else ""
    ax.set(xlabel="number of classes C", ylabel="count", title=f"{layer} ({rows[0]['seeds']} seeds per C){na}",
           xticks=C)
    ax.grid(alpha=0.3)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  title = "trained, mean ± std over seeds\n(dotted: at initialisation)"
  if free:
    free[0].legend(handles, labels, loc="center", fontsize=9, title=title, title_fontsize=9)
  else:
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, title=title, title_fontsize=8)
  fig.suptitle(results["title"], fontsize=9)
  return fig

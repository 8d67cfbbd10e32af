"""Figure of the lottery-ticket experiment: test accuracy and early-stop iteration against the fraction
of weights remaining, the ticket against its two controls (mean and std over seeds), the dense network
as a line."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ARMS = {"ticket": ("tab:blue", "ticket (reset)"), "reinit": ("tab:orange", "same mask, re-initialised"),
        "random_mask": ("tab:gray", "random mask, same sparsity")}


def figure(results: dict) -> plt.Figure:
  rounds, cfg = results["rounds"], results["config"]
  dense = rounds[0]["dense"]
  x = 100 * np.asarray([r["remaining"] for r in rounds[1:]])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
  for ax, (key, scale, label) in zip(axes, (("accuracy", 100, "test accuracy (%)"), ("best_step", 1, "early-stop iteration"))):
    for arm, (color, name) in ARMS.items():
      mean = scale * np.asarray([r[arm][f"{key}_mean"] for r in rounds[1:]])
      std = scale * np.asarray([r[arm][f"{key}_std"] for r in rounds[1:]])
      ax.plot(x, mean, "o-", color=color, label=name, ms=3)
      ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    ax.axhline(scale * dense[f"{key}_mean"], color="black", ls=":", lw=1, label="dense")
    ax.set(xscale="log", xlabel="weights remaining (%)", ylabel=label)
    ax.set_xticks([t for t in (100, 50, 20, 10, 5, 2, 1, 0.5) if x.min() / 1.5 <= t <= 100])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  t, described = cfg["train"], results["dataset"]
  reset = f"rewound to iteration {cfg['rewind']:,}" if cfg["rewind"] else "reset to initialisation"
  width = f" (width {t['width']:g})" if t["width"] != 1.0 else ""
  fig.suptitle(f"{t['model']}{width} on {described['name']} ({described['source']}): "
               f"{t['steps']:,} steps per round, {t['num_seeds']} seed(s), survivors {reset}", fontsize=9)
  return fig

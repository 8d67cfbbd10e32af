"""Figure of the width study (Neyshabur et al.): each quantity against the hidden width h, mean and
std over seeds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PANELS = (
  ("test_error", "test error (%)", 100),
  ("distance_mean", "mean ||u_i - u_i^0|| per unit", 1),
  ("frobenius", "||U - U0||_F", 1),
  ("removable", "units removable at the accuracy loss (%)", 100),
  ("elbow", "elbow k of U", 1),
)


def figure(results: dict) -> plt.Figure:
  rows, cfg = results["rows"], results["config"]
  h = np.asarray([r["width"] for r in rows])
  fig, axes = plt.subplots(2, 3, figsize=(13, 7.2), layout="constrained")
  for ax, (key, label, scale) in zip(axes.flat, PANELS):
    series = [("max_mag", "removable_max_mag"), ("max_fp", "removable_max_fp")] if key == "removable" else [(None, key)]
    for name, k in series:
      mean = scale * np.asarray([r[f"{k}_mean"] for r in rows])
      std = scale * np.asarray([r[f"{k}_std"] for r in rows])
      ax.errorbar(h, mean, yerr=std, marker="o", capsize=3, label=name)
    if key == "removable":
      ax.legend(fontsize=8)
    ax.set(xscale="log", xlabel="hidden width h", ylabel=label)
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
  ax = axes.flat[-1]
  steps = np.asarray([r["steps_run"] for r in rows])
  reached = np.asarray([r["train_loss_reached"] for r in rows])
  ax.plot(h, steps, color="tab:blue")
  ax.plot(h[reached], steps[reached], "o", color="tab:blue", label="target reached")
  ax.plot(h[~reached], steps[~reached], "o", mfc="white", color="tab:blue", label="stopped at the step cap")
  ax.legend(fontsize=8)
  ax.set(xscale="log", yscale="log", xlabel="hidden width h", ylabel=f"steps run (cap {cfg['max_steps']:,})")
  ax.set_xscale("log", base=2)
  ax.grid(alpha=0.3)
  fig.suptitle(f"one hidden layer on {cfg['dataset']}, trained to loss {cfg['target_loss']:g} "
               f"({cfg['num_seeds']} seeds; removable at {100 * cfg['accuracy_loss']:g} point)", fontsize=10)
  return fig

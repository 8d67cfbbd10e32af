"""Figures of the teacher-student experiment (Goldt et al.): generalisation error against time per
student width K, final error against K for both training modes, and the student-teacher overlaps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MODES = {"first_layer": "first layer only (v = 1)", "both_layers": "both layers"}


def figure(results: dict) -> plt.Figure:
  """Row 1: eps_g against alpha = steps / N per K, one panel per mode (mean, band: std over seeds).
  Row 2: final eps_g against K for both modes; the overlap R_km / sqrt(Q_kk T_mm) of the widest student
  with its units ordered by the teacher unit they follow, |v_k| beside each row."""
  modes = [m for m in MODES if m in results["modes"]]
  fig = plt.figure(figsize=(11, 7.6), layout="constrained")
  grid = fig.add_gridspec(2, max(2, len(modes)))
  cmap = plt.get_cmap("viridis")
  for col, mode in enumerate(modes):
    r = results["modes"][mode]
    ax = fig.add_subplot(grid[0, col])
    for i, K in enumerate(r["ks"]):
      mean, std = np.asarray(r["curve_mean"][i]), np.asarray(r["curve_std"][i])
      color = cmap(i / max(1, len(r["ks"]) - 1))
      ax.plot(results["time"], mean, color=color, label=f"K = {K}")
      ax.fill_between(results["time"], np.maximum(mean - std, 1e-12), mean + std, color=color, alpha=0.2, lw=0)
    ax.set(xscale="log", yscale="log", xlabel="time alpha = steps / N", ylabel="generalisation error eps_g",
           title=f"{MODES[mode]}, M = {results['config']['teacher_units']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  ax = fig.add_subplot(grid[1, 0])
  for mode in modes:
    r = results["modes"][mode]
    ax.errorbar(r["ks"], r["final_mean"], yerr=r["final_std"], marker="o", capsize=3, label=MODES[mode])
  ax.set(yscale="log", xlabel="student units K", ylabel="final eps_g",
         title=f"noise sigma = {results['config']['noise']:g}, {results['config']['num_seeds']} seeds")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  sub = grid[1, 1].subgridspec(1, len(modes))
  for col, mode in enumerate(modes):
    o = results["modes"][mode]["overlap"]
    ax = fig.add_subplot(sub[0, col])
    image = ax.imshow(np.asarray(o["cosine"]), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(len(o["order"])), [f"{k}: |v| {abs(v):.2f}" for k, v in zip(o["order"], o["v"])], fontsize=6)
    ax.set_xticks(range(np.shape(o["cosine"])[1]), [f"teacher {m}" for m in range(np.shape(o["cosine"])[1])],
                  fontsize=7)
    ax.set_title(f"{MODES[mode]}, K = {o['K']}", fontsize=8)
  fig.colorbar(image, ax=ax, label="R_km / sqrt(Q_kk T_mm)")
  return fig

"""Figures of the subspace analysis (report, section 3.3; Figures 6-7): ESD against Marchenko-Pastur,
residual curves with the elbow, accuracy against the rank k. Every function takes the plain dicts that
`spectral.summarize` and `subspace.rank_sweep` return (as stored in results.json), so figures can be
redrawn from a results file alone.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from redundancy_jax.analyses import spectral  # noqa: E402
from redundancy_jax.plots import save  # noqa: E402, F401 (the figures of this module are saved with it)

INIT_COLOR, FIT_COLOR, TRAINED_COLOR, PROJ_COLOR = "tab:orange", "tab:red", "tab:blue", "tab:green"


def _grid(panels: int, ncols: int, title: str | None, size: tuple[float, float] = (4.2, 3.0)):
  """A figure of `panels` axes in rows of `ncols`, under `title` (the model and data, say)."""
  ncols = max(1, min(ncols, panels))
  nrows = math.ceil(panels / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                           layout="constrained")
  for ax in axes.flat[panels:]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title, fontsize=9)
  return fig, list(axes.flat[:panels])


def plot_esd(ax: plt.Axes, summary: dict, title: str) -> None:
  """Histogram of the nonzero eigenvalues of W W^T with the MP law at initialisation (Glorot) and the
  MP law fitted to the bulk. Heights are per unit of lambda over all m eigenvalues, so the curves (the
  continuous part, mass min(1, Q)) sit on the bars; the m - n exact zeros (Q < 1) are left out.

  The x axis stops a little past the bulk; eigenvalues beyond it are counted in the legend.
  """
  m, n, q = summary["m"], summary["n"], summary["Q"]
  lam = np.asarray(summary["eigenvalues"], np.float64)[m - min(m, n) :]
  fit = summary["fit"]
  hi_init, hi_fit = summary["init_edges"][1], fit["lambda_plus"]
  right = 1.12 * max(hi_init, hi_fit, min(lam.max(), 2.5 * hi_fit))
  inside = lam[lam <= right]
  bins = np.linspace(0.0, right, int(np.clip(len(lam) // 5, 10, 60)) + 1)
  ax.hist(inside, bins=bins, weights=np.full(len(inside), 1.0 / (m * (bins[1] - bins[0]))),
          color=TRAINED_COLOR, alpha=0.55, label=f"ESD ({len(lam)} nonzero)")
  grid = np.linspace(right / 2000, right, 2000)
  for var, color, name in ((summary["init_var"], INIT_COLOR, "MP Glorot"), (fit["var"], FIT_COLOR, "MP fit")):
    pdf = np.asarray(spectral.marchenko_pastur_pdf(grid, m=m, n=n, var=var))
    ax.plot(grid, pdf, color=color, lw=1.6, label=f"{name} ($n\\sigma^2$={n * var:.3g})")
  ax.axvline(hi_fit, color=FIT_COLOR, ls=":", lw=1)
  outliers = inside[inside > hi_fit]
  if len(outliers):  # a rug under the bars (an empty unclipped line would upset the layout)
    ax.plot(outliers, np.zeros(len(outliers)), "|", color=FIT_COLOR, ms=12, mew=1.5, clip_on=False)
  beyond = int(np.sum(lam > right))
  spikes = f"{fit['spikes']} above $\\lambda_+$ ({fit['spikes_tw']} beyond TW margin)"
  if beyond:
    spikes += f"\n{beyond} beyond the axis, max {lam.max():.3g}"
  ax.plot([], [], " ", label=spikes)
  ax.set_xlim(0, right)
  away = grid > 0.05 * right  # the density diverges at 0 when Q = 1: scale the axis to the rest
  top = max(np.asarray(spectral.marchenko_pastur_pdf(grid, m=m, n=n, var=v))[away].max()
            for v in (summary["init_var"], fit["var"]))
  counts, _ = np.histogram(inside, bins=bins)
  ax.set_ylim(0, 1.15 * max(top, counts.max() / (m * (bins[1] - bins[0]))))
  _label(ax, "$\\lambda$ (eigenvalue of $WW^T$)", "density", f"{title}  (m={m}, Q={q:.3g})", "upper right")


def esd_figure(pairs: Sequence[tuple[str, dict, dict]], ncols: int = 4, title: str | None = None) -> plt.Figure:
  """ESD panels, two per layer (initialisation | trained; the trained one alone where `init` is None):
  `pairs` = [(layer, init, trained), ...]."""
  panels = [p for layer, init, trained in pairs for p in ([(init, f"{layer} at initialisation")] if init else [])
            + [(trained, f"{layer} trained")]]
  fig, axes = _grid(len(panels), ncols, title)
  for ax, (summary, name) in zip(axes, panels):
    plot_esd(ax, summary, name)
  return fig


def plot_residuals(ax: plt.Axes, layer: str, trained: dict, init: dict | None = None,
                   update: dict | None = None) -> None:
  """r(k) = ||W - W_k||_F^2 / ||W||_F^2 for k = 1..min(m, n)-1, with the elbow (and chord) marked;
  optionally the same for the initial W and for the update W - W0 (with its elbow)."""
  r = np.asarray(trained["residuals"])
  p = len(r) - 1
  ks = np.arange(1, p)
  ax.plot(ks, r[1:p], color=TRAINED_COLOR, lw=1.5, label="trained")
  if init is not None:
    ax.plot(ks, np.asarray(init["residuals"])[1:p], color=INIT_COLOR, lw=1.2, ls="--", label="initialisation")
  if update is not None:
    ru, ku = np.asarray(update["residuals"]), update["elbow"]
    ax.plot(ks, ru[1:p], color=PROJ_COLOR, lw=1.2, label="update $W - W_0$")
    ax.plot([ku], [ru[ku]], "s", color=PROJ_COLOR, ms=5, label=f"update elbow k={ku}")
  if "elbow" in trained:
    k = trained["elbow"]
    ax.plot([1, p - 1], [r[1], r[p - 1]], color="gray", lw=0.8, ls=":", label="chord")
    ax.plot([k], [r[k]], "o", color=FIT_COLOR, ms=6,
            label=f"elbow k={k}: $\\|W_k\\|_F/\\|W\\|_F$={trained['kept_norm_percent']:.1f}%")
  ax.set_ylim(0, 1.02)
  _label(ax, "rank k", "residual r(k)", f"{layer}  ({trained['m']}x{trained['n']})", "best")


def _label(ax: plt.Axes, xlabel: str, ylabel: str, title: str, legend: str) -> None:
  """The panels' shared typography: axis labels, title and legend placed at `legend`."""
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=6.5, loc=legend)
  ax.tick_params(labelsize=7)


def residuals_figure(entries: Sequence[tuple], ncols: int = 4, title: str | None = None) -> plt.Figure:
  """One residual panel per layer: `entries` = [(layer, trained, init or None[, update]), ...]."""
  fig, axes = _grid(len(entries), ncols, title)
  for ax, entry in zip(axes, entries):
    plot_residuals(ax, *entry)
  return fig


def plot_accuracy(ax: plt.Axes, layer: str, sweep: dict, elbow: int | None = None,
                  update_elbow: int | None = None) -> None:
  """Test accuracy against k for W -> W_k and for W -> W0 + P_k(W - W0), the unchanged network dashed;
  W's elbow and the update's elbow as vertical lines."""
  ks = np.asarray(sweep["ks"])
  ax.plot(ks, 100 * np.asarray(sweep["low_rank"]), "-", color=TRAINED_COLOR, lw=1.5, marker=".", ms=3,
          label="$W_k$ (low rank)")
  if "project_update" in sweep:
    ax.plot(ks, 100 * np.asarray(sweep["project_update"]), "-", color=PROJ_COLOR, lw=1.2, marker=".", ms=3,
            label="$W_0 + P_k(W - W_0)$")
  ax.axhline(100 * sweep["full"], color="k", ls="--", lw=0.8, label=f"unchanged {100 * sweep['full']:.2f}%")
  if elbow is not None:
    ax.axvline(elbow, color=FIT_COLOR, ls=":", lw=1, label=f"elbow of W, k={elbow}")
  if update_elbow is not None:
    ax.axvline(update_elbow, color=PROJ_COLOR, ls=":", lw=1, label=f"elbow of $W - W_0$, k={update_elbow}")
  if ks.max() / max(ks.min(), 1) > 20:
    ax.set_xscale("log")
  _label(ax, "rank k", "test accuracy (%)", layer, "lower right")


def accuracy_figure(entries: Sequence[tuple], ncols: int = 4, title: str | None = None) -> plt.Figure:
  """One accuracy-versus-rank panel per layer: `entries` = [(layer, sweep[, elbow[, update elbow]]), ...]."""
  fig, axes = _grid(len(entries), ncols, title)
  for ax, entry in zip(axes, entries):
    plot_accuracy(ax, *entry)
  return fig

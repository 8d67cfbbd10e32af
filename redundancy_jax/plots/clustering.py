"""Figure of the filter-clustering experiment (Brutzkus and Globerson): XORD test accuracy against the
number of filters, angles of filters to their nearest k-means centre (trained against initialisation),
and accuracy when filters are replaced by their centres."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure(results: dict) -> plt.Figure:
  cfg, xord, conv2 = results["config"], results["xord"], results["conv2"]
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.6), layout="constrained")
  ks = [r["k"] for r in xord["rows"]]
  ax = axes[0, 0]
  ax.errorbar(ks, [100 * r["test_mean"] for r in xord["rows"]], yerr=[100 * r["test_std"] for r in xord["rows"]],
              marker="o", capsize=3, label="test (exact, balanced XORD)")
  ax.plot(ks, [100 * r["train_mean"] for r in xord["rows"]], "s--", label=f"train ({cfg['n_train']} points)")
  ax.set(xscale="log", xlabel="filters per sign k", ylabel="accuracy (%)",
         title=f"XORD d = {cfg['pairs']}: {cfg['num_seeds']} seeds, {cfg['steps']:,} SGD steps")
  ax.set_xscale("log", base=2)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  edges = np.linspace(0, 90, 19)
  for ax, (name, r) in zip((axes[0, 1], axes[1, 0]), ((f"XORD, k = {ks[-1]}, all seeds", xord["rows"][-1]),
                                                      (f"Conv-2 conv1 ({conv2['filters']} filters)", conv2))):
    for key, color in (("angles_init", "tab:orange"), ("angles_trained", "tab:blue")):
      counts = np.asarray(r[key]["histogram"], float)
      ax.stairs(counts / counts.sum(), edges, color=color, fill=False, lw=1.6,
                label=f"{key.split('_')[1]} (median {r[key]['median']:.1f} deg)")
    ax.set(xlabel=f"angle to the nearest of {cfg['clusters']} k-means centres (deg)", ylabel="fraction of filters",
           title=name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  ax = axes[1, 1]
  ax.plot(cfg["centres"], [100 * a for a in xord["rows"][-1]["compressed_accuracy"]], "o-", label=f"XORD k = {ks[-1]} (seed 0)")
  ax.plot(cfg["centres"], [100 * a for a in conv2["compressed_accuracy"]], "s-", label="Conv-2 conv1")
  ax.axhline(100 * conv2["accuracy"], color="tab:orange", ls=":", lw=1, label="Conv-2 unchanged")
  ax.set(xscale="log", xlabel="centres (each filter -> its centre x its norm)", ylabel="test accuracy (%)",
         title="compression by clustering")
  ax.set_xscale("log", base=2)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig

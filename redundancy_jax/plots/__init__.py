"""Figures of the report and the related work, one module per experiment; `save` writes any of them."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, stem: str, *, dpi: int = 130, tight: bool = True) -> list[str]:
  """Writes `stem`.png and `stem`.pdf (folders created; process 0 of a multi-process run) and closes the
  figure; returns both paths."""
  from redundancy_jax.core import parallel

  if not parallel.is_writer():
    plt.close(fig)
    return [f"{stem}.png", f"{stem}.pdf"]
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  paths = [f"{stem}.png", f"{stem}.pdf"]
  for p in paths:
    fig.savefig(p, dpi=dpi, bbox_inches="tight" if tight else None)
  plt.close(fig)
  return paths

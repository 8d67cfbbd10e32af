"""Figures of the training-dynamics graph (report section 3.2, Figures 3-5).

Input: one or more runs, each `(label, result)` with `result` from `dynamics.analyse`. Outputs:
- `render_frames`: one PNG per epoch (one panel per run), an animated GIF, and an MP4 when
  `imageio-ffmpeg` is installed;
- `save_init_vs_converged`: initialisation next to convergence (Figure 3; with two runs, Figure 5);
- `write_page`: one self-contained offline HTML page (data and script inline, canvas drawing).

Drawing conventions, shared by the PNGs and the page: node area grows with the unit's norm (scaled
over the run's range of norms), edges are darker the heavier they are, units with at least one
repeat (|r| >= 0.5 with another unit) are orange, the others blue.
"""

from __future__ import annotations

import html
import json
import os
import re
from importlib import resources
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from redundancy_jax.core import data, storage
from redundancy_jax.plots import save

Run = tuple[str, dict]  # (label, dynamics.analyse result)

PLAIN, REPEATED = "#1f77b4", "#e6550d"


def _norm_range(result: dict) -> tuple[float, float]:
  norms = np.concatenate([np.asarray(f["norm"]) for f in result["frames"]])
  return float(norms.min()), float(norms.max())


def _weight_range(result: dict) -> tuple[float, float]:
  weights = [np.asarray(f["edges"])[:, 2] for f in result["frames"] if len(f["edges"])]
  top = float(np.concatenate(weights).max()) if weights else result["threshold"]
  return result["threshold"], max(top, result["threshold"])


def _bounds(result: dict, margin: float = 0.06) -> tuple[float, float, float, float]:
  """A square view holding every frame's positions (fixed over the animation)."""
  xy = np.concatenate([np.asarray(f["positions"]) for f in result["frames"]])
  lo, hi = xy.min(0), xy.max(0)
  centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1.0) * (1 + margin)
  return centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half


def node_sizes(norms: np.ndarray, norm_range: tuple[float, float]) -> np.ndarray:
  """Marker areas (points^2) from 8 to 90, growing with the norm over the run's range."""
  lo, hi = norm_range
  return 8 + 82 * np.clip((np.asarray(norms) - lo) / max(hi - lo, 1e-12), 0, 1)


def draw_frame(ax, result: dict, index: int, *, title: str | None = None) -> None:
  """Draws frame `index` of `result` on a matplotlib axis."""
  frame = result["frames"][index]
  xy = np.asarray(frame["positions"])
  edges = np.asarray(frame["edges"]).reshape(-1, 3)
  lo, hi = _weight_range(result)
  if len(edges):
    i, j = edges[:, 0].astype(int), edges[:, 1].astype(int)
    shade = 0.25 + 0.75 * np.clip((edges[:, 2] - lo) / max(hi - lo, 1e-12), 0, 1)
    colours = np.zeros((len(edges), 4))
    colours[:, :3] = 0.15
    colours[:, 3] = shade
    order = np.argsort(shade)  # heaviest on top
    segments = np.stack([xy[i], xy[j]], 1)[order]
    ax.add_collection(LineCollection(segments, colors=colours[order], linewidths=0.8, zorder=1))
  repeats = np.asarray(frame.get("repeats", np.zeros(len(xy))))
  colour = np.where(repeats > 0, REPEATED, PLAIN)
  ax.scatter(xy[:, 0], xy[:, 1], s=node_sizes(frame["norm"], _norm_range(result)), c=colour,
             edgecolors="white", linewidths=0.4, zorder=2)
  x0, x1, y0, y1 = _bounds(result)
  ax.set_xlim(x0, x1)
  ax.set_ylim(y0, y1)
  ax.set_aspect("equal")
  ax.set_xticks([])
  ax.set_yticks([])
  stats = frame["stats"]
  text = f"{stats['edges']} edges, {stats['components']} components (largest {stats['largest_component']})"
  if "repeated_units" in stats:
    text += f"\n{stats['repeated_units']} repeated units"
  if "removable" in frame:
    half = _fraction_index(result, 0.5)
    if half is not None:
      text += f", agreement at 50% removed {100 * frame['removable']['mean'][half]:.0f}%"
  ax.set_xlabel(text, fontsize=8, color="0.25")
  ax.set_title(title or f"{result['layer']}, epoch {frame['epoch']}", fontsize=10)


def _fraction_index(result: dict, f: float) -> int | None:
  fractions = list(result.get("fractions", []))
  return fractions.index(f) if f in fractions else None


def _figure(columns: int, rows: int = 1, size: float = 4.6) -> Figure:
  fig = Figure(figsize=(size * columns, size * rows + 0.9), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def _layout(fig: Figure) -> None:
  """Fixed margins (the same for every frame of an animation): room for the titles, each panel's two
  lines of statistics and the four-line caption below them."""
  height = fig.get_figheight()
  fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.3 / height, bottom=1.05 / height, wspace=0.04)


def _layer_name(result: dict) -> str:
  """"conv2, layer fc1" (the model from the training config `experiments.dynamics` records), or "layer fc1"."""
  model = result.get("training", {}).get("model")
  return f"{model}, layer {result['layer']}" if model else f"layer {result['layer']}"


def _name(label: str, result: dict) -> str:
  """"label: model, layer L", or "model, layer L" when the label is the model's name."""
  name = _layer_name(result)
  return name if label == result.get("training", {}).get("model") else f"{label}: {name}"


def _data_line(runs: Sequence[Run]) -> str:
  """The data the runs were trained on and analysed with, with its source ("" when not recorded)."""
  labels = dict.fromkeys(data.label(r["dataset"]) for _, r in runs if "dataset" in r)
  return "; ".join(labels)


def _caption_text(runs: Sequence[Run]) -> str:
  r = runs[0][1]
  return ((f"data: {_data_line(runs)}\n" if _data_line(runs) else "") +
          f"node area: norm ({_norm_range(r)[0]:.3g}..{_norm_range(r)[1]:.3g}); edges: weight >= {r['threshold']:.3g} "
          f"(cosine >= {r['threshold_cosine']:.3g}, sigma {r['sigma']:g}), darker = heavier\n"
          "orange: repeated units, whose activations on data correlate (|r| >= 0.5) with another unit's "
          "(activations, not weights: a repeated unit needs no edge)")


CAPTION = dict(fontsize=7, color="0.3")


def _caption(fig: Figure, runs: Sequence[Run]) -> None:
  fig.text(0.5, 0.005, _caption_text(runs), ha="center", va="bottom", **CAPTION)


def _frame_index(result: dict, k: int, count: int) -> int:
  """Frame of `result` shown at step k of `count` (runs with fewer frames are stretched)."""
  n = len(result["frames"])
  return int(round(k * (n - 1) / max(count - 1, 1)))


def render_frames(runs: Sequence[Run], outdir: str, *, fps: float = 8.0, mp4: bool = True) -> dict[str, list[str]]:
  """Writes outdir/frames/epoch_XXXXX.png for every epoch, outdir/dynamics.gif and, when
  `imageio-ffmpeg` is importable, outdir/dynamics.mp4. Each figure is rendered once."""
  from PIL import Image

  from redundancy_jax.core import parallel

  if not parallel.is_writer():
    return {"frames": [], "gif": []}
  os.makedirs(os.path.join(outdir, "frames"), exist_ok=True)
  count = max(len(r["frames"]) for _, r in runs)
  fig = _figure(len(runs))
  pngs, images = [], []
  for k in range(count):
    fig.clear()
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (label, result) in zip(axes, runs):
      index = _frame_index(result, k, count)
      draw_frame(ax, result, index, title=f"{_name(label, result)}, epoch {result['frames'][index]['epoch']}")
    _caption(fig, runs)
    _layout(fig)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    epoch = runs[0][1]["frames"][_frame_index(runs[0][1], k, count)]["epoch"]
    path = os.path.join(outdir, "frames", f"epoch_{epoch:05d}.png")
    image.save(path)
    pngs.append(path)
    images.append(image)
  out = {"frames": pngs, "gif": [os.path.join(outdir, "dynamics.gif")]}
  palette = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=128) for im in images]
  palette[0].save(out["gif"][0], save_all=True, append_images=palette[1:], duration=int(1000 / fps), loop=0)
  if mp4 and _write_mp4(images, os.path.join(outdir, "dynamics.mp4"), fps):
    out["mp4"] = [os.path.join(outdir, "dynamics.mp4")]
  return out


def _write_mp4(images, path: str, fps: float) -> bool:
  """MP4 through imageio-ffmpeg when it is installed; False otherwise."""
  try:
    import imageio_ffmpeg
  except ImportError:
    return False
  w, h = images[0].size
  w, h = w - w % 2, h - h % 2
  writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, macro_block_size=1)
  writer.send(None)
  for image in images:
    writer.send(np.ascontiguousarray(np.asarray(image)[:h, :w]).tobytes())
  writer.close()
  return True


def save_init_vs_converged(runs: Sequence[Run], path: str) -> list[str]:
  """Initialisation (first frame) next to convergence (last frame), one row per run (several runs: each
  labelled on its left), the layer in the title; PNG and PDF. Laid out by matplotlib's constrained
  layout, so titles, statistics and caption keep clear of each other."""
  fig = _figure(2, len(runs))
  fig.set_layout_engine("constrained")
  axes = fig.subplots(len(runs), 2, squeeze=False)
  for row, (label, result) in zip(axes, runs):
    draw_frame(row[0], result, 0, title=f"at initialisation (epoch {result['epochs'][0]})")
    draw_frame(row[1], result, len(result["frames"]) - 1, title=f"after training (epoch {result['epochs'][-1]})")
    if len(runs) > 1:
      row[0].set_ylabel(label, fontsize=10)
  fig.suptitle("; ".join(dict.fromkeys(_layer_name(result) for _, result in runs)), fontsize=11)
  fig.supxlabel(_caption_text(runs), **CAPTION)
  return save(fig, os.path.splitext(path)[0], dpi=100, tight=False)


# ----------------------------------------------------------------------------- the page


def _page_run(label: str, result: dict) -> dict:
  """The compact form of one run the page reads (rounded, edges flattened)."""
  frames = []
  for f in result["frames"]:
    xy = np.asarray(f["positions"])
    edges = np.asarray(f["edges"]).reshape(-1, 3)
    frames.append({
      "epoch": int(f["epoch"]),
      "x": np.round(xy[:, 0], 1).tolist(),
      "y": np.round(xy[:, 1], 1).tolist(),
      "norm": np.round(np.asarray(f["norm"]), 4).tolist(),
      "dist": np.round(np.asarray(f["init_distance"]), 4).tolist(),
      "nn": np.asarray(f["nearest"]).astype(int).tolist(),
      "nncos": np.round(np.asarray(f["nearest_cosine"]), 3).tolist(),
      "rep": np.asarray(f["repeats"]).astype(int).tolist() if "repeats" in f else None,
      "edges": np.stack([edges[:, 0], edges[:, 1], np.round(edges[:, 2], 4)], 1).ravel().tolist(),
      "stats": f["stats"],
      "removable": (
        {k: np.round(np.asarray(v), 4).tolist() for k, v in f["removable"].items()} if "removable" in f else None
      ),
    })
  for f in frames:  # integers print shorter
    f["edges"] = [int(v) if k % 3 < 2 else v for k, v in enumerate(f["edges"])]
  keys = ("layer", "units", "fan_in", "sigma", "threshold", "threshold_cosine", "edge_cap", "fractions", "config")
  return {"label": label, "name": _name(label, result), **{k: result.get(k) for k in keys}, "frames": frames}


def write_page(path: str, runs: Sequence[Run], *, title: str | None = None, notes: Sequence[str] = ()) -> str:
  """Writes the interactive page: epoch slider, play/pause, threshold slider, hover cards, and a plot
  of the per-epoch statistics. No network: the data and the script (templates/dynamics.*) are inline."""
  data = {"runs": [_page_run(label, result) for label, result in runs], "notes": list(notes)}
  if title is None:
    title = " vs ".join(_name(label, result) for label, result in runs)
    title += f" on {_data_line(runs)}" if _data_line(runs) else ""
  fields = {
    "TITLE": html.escape(title),
    "WARNINGS": "".join(_cap_warning(label, result) for label, result in runs if result.get("edge_cap")),
    "DATA": json.dumps(storage.jsonable(data), separators=(",", ":")).replace("</", "<\\/"),
    "SCRIPT": _template("dynamics.js"),
  }
  page = re.sub(r"%(TITLE|WARNINGS|DATA|SCRIPT)%", lambda match: fields[match.group(1)], _template("dynamics.html"))
  storage.atomic_write(path, lambda f: f.write(page.encode("utf-8")))
  return path


def _template(name: str) -> str:
  return (resources.files(__package__) / "templates" / name).read_text(encoding="utf-8")


def _cap_warning(label: str, result: dict) -> str:
  """The page's notice that `result`'s layer had more units than drawn in full (its edges capped)."""
  text = (
    f"Warning: {label} {result['layer']} has {result['units']} units, more than the {result['config']['max_nodes']} "
    f"drawn in full: every node keeps only its {result['edge_cap']} strongest edges (layout, files and page)."
  )
  return f'<div class="warn">{html.escape(text)}</div>'

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
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

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


def _layout(fig: Figure, rows: int = 1) -> None:
  """Fixed margins (the same for every frame of an animation): room for the titles and captions."""
  height = fig.get_figheight()
  fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.3 / height, bottom=0.75 / height, wspace=0.04, hspace=0.25)


def _caption(fig: Figure, runs: Sequence[Run]) -> None:
  r = runs[0][1]
  fig.text(
    0.5, 0.005,
    f"node area: norm ({_norm_range(r)[0]:.3g}..{_norm_range(r)[1]:.3g}); edges: weight >= {r['threshold']:.3g}\n"
    f"(cosine >= {r['threshold_cosine']:.3g}, sigma {r['sigma']:g}), darker = heavier; "
    "orange: repeated units (|r| >= 0.5)",
    ha="center", va="bottom", fontsize=7, color="0.3",
  )


def _frame_index(result: dict, k: int, count: int) -> int:
  """Frame of `result` shown at step k of `count` (runs with fewer frames are stretched)."""
  n = len(result["frames"])
  return int(round(k * (n - 1) / max(count - 1, 1)))


def render_frames(runs: Sequence[Run], outdir: str, *, fps: float = 8.0, mp4: bool = True) -> dict[str, list[str]]:
  """Writes outdir/frames/epoch_XXXXX.png for every epoch, outdir/dynamics.gif and, when
  `imageio-ffmpeg` is importable, outdir/dynamics.mp4. Each figure is rendered once."""
  from PIL import Image

  os.makedirs(os.path.join(outdir, "frames"), exist_ok=True)
  count = max(len(r["frames"]) for _, r in runs)
  fig = _figure(len(runs))
  pngs, images = [], []
  for k in range(count):
    fig.clear()
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (label, result) in zip(axes, runs):
      index = _frame_index(result, k, count)
      draw_frame(ax, result, index, title=f"{label}: {result['layer']}, epoch {result['frames'][index]['epoch']}")
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
  """Initialisation (first frame) next to convergence (last frame), one row per run; PNG and PDF."""
  fig = _figure(2, len(runs))
  axes = fig.subplots(len(runs), 2, squeeze=False)
  for row, (label, result) in zip(axes, runs):
    last = len(result["frames"]) - 1
    draw_frame(row[0], result, 0, title=f"{label}: {result['layer']} at initialisation (epoch {result['epochs'][0]})")
    draw_frame(row[1], result, last, title=f"{label}: {result['layer']} after training (epoch {result['epochs'][-1]})")
  _caption(fig, runs)
  _layout(fig, len(runs))
  paths = [path, os.path.splitext(path)[0] + ".pdf"]
  for p in paths:
    fig.savefig(p)
  return paths


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
  return {"label": label, **{k: result.get(k) for k in keys}, "frames": frames}


def write_page(path: str, runs: Sequence[Run], *, title: str | None = None, notes: Sequence[str] = ()) -> str:
  """Writes the interactive page: epoch slider, play/pause, threshold slider, hover cards, and a plot
  of the per-epoch statistics. No network: the data and the script are inline."""
  data = {"runs": [_page_run(label, result) for label, result in runs], "notes": list(notes)}
  payload = json.dumps(data, separators=(",", ":"), default=_plain).replace("</", "<\\/")
  title = title or " vs ".join(f"{label} {result['layer']}" for label, result in runs)
  page = _PAGE.replace("%TITLE%", html.escape(title)).replace("%DATA%", payload).replace("%SCRIPT%", _SCRIPT)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(page)
  os.replace(tmp, path)
  return path


def _plain(x):
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Training dynamics: %TITLE%</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 12px 18px; color: #222; }
h1 { font-size: 17px; margin: 0 0 6px; }
#controls { display: flex; gap: 14px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
#controls input[type=range] { width: 260px; }
#panels { display: flex; gap: 12px; flex-wrap: wrap; }
.panel h2 { font-size: 13px; margin: 4px 0; }
.panel canvas { border: 1px solid #ccc; cursor: crosshair; }
.warn { background: #fff3cd; border: 1px solid #e0c36b; padding: 4px 8px; margin: 4px 0; }
.note { color: #555; font-size: 12px; margin: 2px 0; }
#card { position: fixed; pointer-events: none; background: #fff; border: 1px solid #888; padding: 4px 8px;
        box-shadow: 1px 1px 4px rgba(0,0,0,.2); font-size: 12px; display: none; }
#legend { max-width: 940px; }
#legend span { margin-right: 12px; white-space: nowrap; display: inline-block; }
#status { font-size: 10px; color: #999; }
</style></head>
<body>
<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(String(e.message || e));
  var s = document.getElementById("status");
  if (s) { s.dataset.errors = String(window.__errors.length); s.textContent = "error: " + window.__errors.join("; "); }
});
</script>
<h1>Training dynamics: %TITLE%</h1>
<div id="warnings"></div>
<div id="controls">
  <button id="play" type="button">Play</button>
  <label>epoch <input id="epoch" type="range" min="0" max="0" step="1" value="0"></label>
  <span id="epochLabel"></span>
  <label>edge threshold <input id="threshold" type="range" min="0" max="1" step="0.001" value="0"></label>
  <span id="thresholdLabel"></span>
</div>
<div id="panels"></div>
<div class="note">Node area: the unit's norm (over the run's range); edge darkness: weight
A<sub>ij</sub> = exp(-(1 - cos)/&sigma;<sup>2</sup>); orange: repeated units (|r| &ge; 0.5 with another unit).
Hover a node for its card. The layout is computed at the run's threshold; the slider only hides lighter edges.</div>
<canvas id="stats" width="940" height="190"></canvas>
<div id="legend"></div>
<div id="notes"></div>
<div id="card"></div>
<pre id="status" data-ready="0" data-errors="0"></pre>
<script type="application/json" id="data">%DATA%</script>
<script>%SCRIPT%</script>
</body></html>
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("data").textContent);
  var runs = DATA.runs, N = Math.max.apply(null, runs.map(function (r) { return r.frames.length; }));
  var $ = function (id) { return document.getElementById(id); };
  var SIZE = runs.length > 1 ? 460 : 620, PAD = 14;
  var epochSlider = $("epoch"), thrSlider = $("threshold"), card = $("card");
  var state = { k: 0, thr: 0, timer: null, checksum: 0, edgesDrawn: 0 };

  function frameIndex(run, k) { return Math.round(k * (run.frames.length - 1) / Math.max(N - 1, 1)); }
  function fmt(v, d) {
    if (v === null || v === undefined) return "n/a";
    return Number.isInteger(v) ? String(v) : Number(v).toFixed(d);
  }

  // per-run fixed view, ranges of norms and weights
  var thrMin = Infinity, thrMax = -Infinity;
  runs.forEach(function (run) {
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, n0 = Infinity, n1 = -Infinity, w1 = run.threshold;
    run.frames.forEach(function (f) {
      for (var i = 0; i < f.x.length; i++) {
        x0 = Math.min(x0, f.x[i]); x1 = Math.max(x1, f.x[i]); y0 = Math.min(y0, f.y[i]); y1 = Math.max(y1, f.y[i]);
        n0 = Math.min(n0, f.norm[i]); n1 = Math.max(n1, f.norm[i]);
      }
      for (var e = 2; e < f.edges.length; e += 3) w1 = Math.max(w1, f.edges[e]);
    });
    var half = Math.max(x1 - x0, y1 - y0, 1) / 2;
    run.view = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, s: (SIZE / 2 - PAD) / half };
    run.norms = [n0, n1]; run.weights = [run.threshold, w1];
    thrMin = Math.min(thrMin, Math.floor(run.threshold * 1e4) / 1e4); thrMax = Math.max(thrMax, w1);  // page weights have 4 decimals
  });
  if (!(thrMax > thrMin)) thrMax = thrMin + 1e-3;
  state.thr = thrMin;
  epochSlider.max = String(N - 1);
  thrSlider.min = String(thrMin); thrSlider.max = String(thrMax);
  thrSlider.step = String((thrMax - thrMin) / 200); thrSlider.value = String(thrMin);

  // panels
  runs.forEach(function (run, r) {
    var div = document.createElement("div"); div.className = "panel"; div.style.width = SIZE + "px";
    var h = document.createElement("h2"); h.textContent = run.label + ": " + run.layer + " (" + run.units + " units, fan-in " + run.fan_in + ")";
    var c = document.createElement("canvas"); c.width = SIZE; c.height = SIZE;
    var info = document.createElement("div"); info.className = "note";
    div.appendChild(h); div.appendChild(c); div.appendChild(info); $("panels").appendChild(div);
    run.canvas = c; run.info = info;
    c.addEventListener("mousemove", function (ev) { hover(run, ev); });
    c.addEventListener("mouseleave", function () { card.style.display = "none"; });
    if (run.edge_cap) {
      var w = document.createElement("div"); w.className = "warn";
      w.textContent = "Warning: " + run.label + " " + run.layer + " has " + run.units + " units, more than the " +
        run.config.max_nodes + " drawn in full: every node keeps only its " + run.edge_cap + " strongest edges (layout, files and page).";
      $("warnings").appendChild(w);
    }
  });
  (DATA.notes || []).forEach(function (t) { var d = document.createElement("div"); d.className = "note"; d.textContent = t; $("notes").appendChild(d); });

  function screen(run, f, i) {
    var v = run.view;
    return [SIZE / 2 + (f.x[i] - v.cx) * v.s, SIZE / 2 - (f.y[i] - v.cy) * v.s];
  }
  function radius(run, norm) {
    var lo = run.norms[0], hi = run.norms[1];
    return 1.6 + 5.4 * Math.sqrt(Math.min(Math.max((norm - lo) / Math.max(hi - lo, 1e-12), 0), 1));
  }

  function drawRun(run) {
    var f = run.frames[frameIndex(run, state.k)], ctx = run.canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, SIZE, SIZE);
    var lo = run.weights[0], hi = Math.max(run.weights[1], lo + 1e-12), buckets = [];
    for (var b = 0; b < 8; b++) buckets.push([]);
    var drawn = 0;
    for (var e = 0; e < f.edges.length; e += 3) {
      var w = f.edges[e + 2];
      if (w < state.thr) continue;
      var t = Math.min(Math.max((w - lo) / (hi - lo), 0), 1);
      buckets[Math.min(7, Math.floor(t * 8))].push(e);
      drawn++;
    }
    ctx.lineWidth = 1;
    buckets.forEach(function (list, b) {
      if (!list.length) return;
      ctx.strokeStyle = "rgba(38,38,38," + (0.25 + 0.75 * (b + 0.5) / 8).toFixed(3) + ")";
      ctx.beginPath();
      list.forEach(function (e) {
        var a = screen(run, f, f.edges[e]), c = screen(run, f, f.edges[e + 1]);
        ctx.moveTo(a[0], a[1]); ctx.lineTo(c[0], c[1]);
      });
      ctx.stroke();
    });
    var sum = 0;
    for (var i = 0; i < f.x.length; i++) {
      var p = screen(run, f, i);
      ctx.beginPath(); ctx.arc(p[0], p[1], radius(run, f.norm[i]), 0, 2 * Math.PI);
      ctx.fillStyle = f.rep && f.rep[i] > 0 ? "#e6550d" : "#1f77b4"; ctx.fill();
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 0.6; ctx.stroke();
      sum = (sum * 31 + Math.round(p[0] * 10) * 7 + Math.round(p[1] * 10)) % 2147483647;
    }
    var s = f.stats;
    run.info.textContent = "epoch " + f.epoch + ": " + drawn + " of " + s.edges + " edges drawn, " + s.components +
      " components (largest " + s.largest_component + "), mean norm " + fmt(s.norm_mean, 4) + " \u00b1 " + fmt(s.norm_std, 4) +
      ", mean distance from initialisation " + fmt(s.init_distance_mean, 4) +
      (s.repeated_units !== undefined ? ", " + s.repeated_units + " repeated units" : "");
    return { sum: sum, drawn: drawn };
  }

  var SERIES = [
    ["components", "components", "#1f77b4"], ["largest_component", "largest component", "#ff7f0e"],
    ["edges", "edges", "#7f7f7f"], ["norm_mean", "mean norm", "#2ca02c"],
    ["init_distance_mean", "mean distance from init", "#d62728"], ["repeated_units", "repeated units", "#9467bd"],
    ["agreement50", "agreement, 50% removed", "#8c564b"]
  ];
  function seriesValue(run, f, key) {
    if (key === "agreement50") {
      var j = (run.fractions || []).indexOf(0.5);
      return f.removable && j >= 0 ? f.removable.mean[j] : null;
    }
    return f.stats[key] === undefined ? null : f.stats[key];
  }
  function drawStats() {
    var c = $("stats"), ctx = c.getContext("2d"), W = c.width, H = c.height, L = 40, R = 10, T = 10, B = 22;
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    ctx.strokeStyle = "#ccc"; ctx.strokeRect(L, T, W - L - R, H - T - B);
    var e0 = Infinity, e1 = -Infinity;
    runs.forEach(function (run) { run.frames.forEach(function (f) { e0 = Math.min(e0, f.epoch); e1 = Math.max(e1, f.epoch); }); });
    var X = function (e) { return L + (e - e0) / Math.max(e1 - e0, 1) * (W - L - R); };
    var legend = [];
    SERIES.forEach(function (sd) {
      var lo = Infinity, hi = -Infinity;
      runs.forEach(function (run) { run.frames.forEach(function (f) { var v = seriesValue(run, f, sd[0]); if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }); });
      if (lo === Infinity) return;
      var Y = function (v) { return H - B - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * (H - T - B); };
      runs.forEach(function (run, r) {
        ctx.strokeStyle = sd[2]; ctx.lineWidth = 1.4; ctx.setLineDash(r ? [5, 3] : []); ctx.beginPath();
        run.frames.forEach(function (f, i) { var v = seriesValue(run, f, sd[0]); if (v === null) return; if (i) ctx.lineTo(X(f.epoch), Y(v)); else ctx.moveTo(X(f.epoch), Y(v)); });
        ctx.stroke();
      });
      legend.push("<span style='color:" + sd[2] + "'>&#9644; " + sd[1] + " " + fmt(lo, 3) + "&ndash;" + fmt(hi, 3) + "</span>");
    });
    ctx.setLineDash([]);
    var ep = runs[0].frames[frameIndex(runs[0], state.k)].epoch;
    ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.moveTo(X(ep), T); ctx.lineTo(X(ep), H - B); ctx.stroke();
    ctx.fillStyle = "#333"; ctx.font = "11px sans-serif";
    ctx.fillText("epoch " + e0, L, H - 6); ctx.fillText("epoch " + e1, W - R - 60, H - 6);
    ctx.fillText("each series scaled to its own range" + (runs.length > 1 ? "; dashed: " + runs[1].label : ""), L + 120, H - 6);
    $("legend").innerHTML = legend.join(" ");
  }

  function draw() {
    var sum = 0, drawn = 0;
    runs.forEach(function (run) { var o = drawRun(run); sum = (sum * 131 + o.sum) % 2147483647; drawn += o.drawn; });
    drawStats();
    var f0 = runs[0].frames[frameIndex(runs[0], state.k)];
    $("epochLabel").textContent = "epoch " + f0.epoch + " (" + (state.k + 1) + "/" + N + ")";
    $("thresholdLabel").textContent = "weight \u2265 " + state.thr.toFixed(4) + " (cosine \u2265 " +
      (1 + Math.pow(runs[0].sigma, 2) * Math.log(state.thr)).toFixed(3) + ")";
    state.checksum = sum; state.edgesDrawn = drawn;
    var st = $("status");
    st.textContent = JSON.stringify({ ready: true, frame: state.k, epoch: f0.epoch, threshold: state.thr,
      checksum: sum, edges_drawn: drawn, errors: window.__errors.length });
    st.dataset.ready = "1"; st.dataset.checksum = String(sum); st.dataset.epoch = String(f0.epoch);
  }

  function hover(run, ev) {
    var rect = run.canvas.getBoundingClientRect(), mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
    var f = run.frames[frameIndex(run, state.k)], best = -1, bestD = 64;
    for (var i = 0; i < f.x.length; i++) {
      var p = screen(run, f, i), d = (p[0] - mx) * (p[0] - mx) + (p[1] - my) * (p[1] - my);
      if (d < bestD) { bestD = d; best = i; }
    }
    if (best < 0) { card.style.display = "none"; return; }
    showCard(run, best, ev.clientX, ev.clientY);
  }

  function showCard(run, best, cx, cy) {
    var f = run.frames[frameIndex(run, state.k)];
    card.innerHTML = "<b>unit " + best + "</b> (" + run.label + ", epoch " + f.epoch + ")<br>norm " + fmt(f.norm[best], 4) +
      "<br>distance from initialisation " + fmt(f.dist[best], 4) + "<br>nearest by cosine: unit " + f.nn[best] +
      " (cos " + fmt(f.nncos[best], 3) + ")<br>repeat count " + (f.rep ? f.rep[best] : "n/a");
    card.style.left = (cx + 14) + "px"; card.style.top = (cy + 10) + "px"; card.style.display = "block";
    card.dataset.unit = String(best);
  }

  epochSlider.addEventListener("input", function () { state.k = Number(epochSlider.value); draw(); });
  thrSlider.addEventListener("input", function () { state.thr = Number(thrSlider.value); draw(); });
  $("play").addEventListener("click", function () {
    if (state.timer) { clearInterval(state.timer); state.timer = null; this.textContent = "Play"; return; }
    this.textContent = "Pause";
    state.timer = setInterval(function () {
      epochSlider.value = String((state.k + 1) % N); epochSlider.dispatchEvent(new Event("input"));
    }, 160);
  });

  // URL hash: #epoch=E&threshold=T&hover=U (epoch of the first run, nearest snapshot) drives the sliders
  function applyHash() {
    var h = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) { var p = kv.split("="); if (p[0]) h[p[0]] = p[1]; });
    if (h.threshold !== undefined) { thrSlider.value = h.threshold; thrSlider.dispatchEvent(new Event("input")); }
    if (h.epoch !== undefined) {
      var target = Number(h.epoch), best = 0;
      for (var k = 0; k < N; k++) {
        var e = runs[0].frames[frameIndex(runs[0], k)].epoch;
        if (Math.abs(e - target) < Math.abs(runs[0].frames[frameIndex(runs[0], best)].epoch - target)) best = k;
      }
      epochSlider.value = String(best); epochSlider.dispatchEvent(new Event("input"));
    }
    if (h.hover !== undefined) {  // the card of unit h.hover of the first run, as if hovered
      var run = runs[0], f = run.frames[frameIndex(run, state.k)], u = Number(h.hover);
      if (u >= 0 && u < f.x.length) {
        var rect = run.canvas.getBoundingClientRect(), p = screen(run, f, u);
        showCard(run, u, rect.left + p[0], rect.top + p[1]);
      }
    }
  }
  window.addEventListener("hashchange", applyHash);
  draw();
  applyHash();
})();
"""

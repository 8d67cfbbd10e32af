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
    var h = document.createElement("h2"); h.textContent = run.name + " (" + run.units + " units, fan-in " + run.fan_in + ")";
    var c = document.createElement("canvas"); c.width = SIZE; c.height = SIZE;
    var info = document.createElement("div"); info.className = "note";
    div.appendChild(h); div.appendChild(c); div.appendChild(info); $("panels").appendChild(div);
    run.canvas = c; run.info = info;
    c.addEventListener("mousemove", function (ev) { hover(run, ev); });
    c.addEventListener("mouseleave", function () { card.style.display = "none"; });
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
    var st = $("status").dataset;  // the drawn state as data-* attributes, read by the page's test
    st.frame = String(state.k); st.epoch = String(f0.epoch); st.threshold = String(state.thr);
    st.checksum = String(sum); st.edgesDrawn = String(drawn); st.errors = String(window.__errors.length);
    st.ready = "1";
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

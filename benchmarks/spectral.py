"""ESD and residual curves of every VGG19 layer: JAX against NumPy/SciPy float64 and WeightWatcher.

  python -m benchmarks.spectral [--repeats=5] [--noweightwatcher]

The 19 unit matrices of a Glorot-initialised VGG19 (16 convolutions as (c_out, 9 c_in), 3 dense) are
analysed four ways, timed as the median of `--repeats` runs after a warm-up (compilation excluded and
reported apart), the contenders called in turn within each repeat so that load from other processes
falls on all of them alike:
  jax       `spectral.esd_and_residuals` (float32, QR then SVD of the square factor), as one compiled
            program for all layers and as one compiled call per layer;
  scipy64   layer by layer, `scipy.linalg.svdvals` in float64, eigenvalues and residuals in NumPy;
  numpy64   the same with `np.linalg.svd(compute_uv=False)`;
  ww        WeightWatcher's `analyze()` on the same matrices (written once as its flat .npy files),
            where it is installed (`pip install weightwatcher`; it needs no torch for flat files).
Checks that JAX's eigenvalues match SciPy's to 1e-4 relative over the top 90% of each spectrum.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from absl import app, flags

from benchmarks.common import record, table
from redundancy_jax.analyses import spectral
from redundancy_jax.models import create_model, topology
from redundancy_jax.analyses.units import unit_matrix

flags.DEFINE_integer("repeats", 5, "Timed runs of every contender (the median is reported).", lower_bound=1)
flags.DEFINE_bool("weightwatcher", True, "Also time WeightWatcher's analyze(), where it is installed.")
FLAGS = flags.FLAGS

TOLERANCE = 1e-4  # relative, on the top 90% of each spectrum


def vgg19_matrices(seed: int = 0) -> dict[str, np.ndarray]:
  """The unit matrix of every VGG19 layer at a Glorot initialisation."""
  model = create_model("vgg19")
  params = model.init(jax.random.key(seed), (32, 32, 3))["params"]
  return {name: np.asarray(unit_matrix(params, name)) for name in topology.kernel_layers(params)}


@jax.jit
def jax_all(mats: dict[str, jax.Array]) -> dict[str, tuple[jax.Array, jax.Array]]:
  """(eigenvalues, residuals) of every matrix, in one compiled program."""
  return {name: spectral.esd_and_residuals(W) for name, W in mats.items()}


def numpy_one(W: np.ndarray, svdvals) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues of W W^T (ascending, with m - n zeros) and r(k), k = 0..min(m, n), in float64."""
  s = svdvals(W.astype(np.float64))
  s2 = np.sort(s)[::-1] ** 2
  eig = np.concatenate([np.zeros(W.shape[0] - len(s2)), s2[::-1]])
  tail = np.cumsum(s2[::-1])[::-1]
  return eig, np.concatenate([tail, [0.0]]) / tail[0]


def numpy_all(mats, svdvals):
  return {name: numpy_one(W, svdvals) for name, W in mats.items()}


def max_relative_error(ours: np.ndarray, ref: np.ndarray, m: int, n: int) -> float:
  """Largest relative eigenvalue error over the top 90% of the min(m, n) nonzero eigenvalues."""
  p = min(m, n)
  top = math.ceil(0.9 * p)
  a, b = np.asarray(ours, np.float64)[-top:], ref[-top:]
  return float(np.max(np.abs(a - b) / b))


def write_ww_flatfiles(mats: dict[str, np.ndarray], folder: str) -> None:
  """WeightWatcher's flat-file model format: <name>.weight.npy plus ww_config.json (dense layers)."""
  from weightwatcher.constants import WW_CONFIG_FILENAME

  layers = {}
  for i, (name, W) in enumerate(mats.items()):
    np.save(os.path.join(folder, f"{name}.weight.npy"), W)
    layers[i] = {"key": f"{name}.weight", "name": name, "longname": name, "weightfile": f"{name}.weight.npy",
                 "biasfile": None, "type": "dense", "dims": json.dumps(list(W.shape))}
  with open(os.path.join(folder, WW_CONFIG_FILENAME), "w") as f:
    json.dump({"weights_dir": folder, "layers": layers}, f)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
  """Median seconds of each function, called in turn within every repeat (after one warm-up each), so
  that load from other processes on a shared machine falls on all contenders alike."""
  times: dict[str, list[float]] = {name: [] for name in fns}
  for name, fn in fns.items():
    jax.block_until_ready(fn())
  for _ in range(repeats):
    for name, fn in fns.items():
      begin = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - begin)
  return {name: float(np.median(t)) for name, t in times.items()}


@contextlib.contextmanager
def _quiet():
  """WeightWatcher prints ("SMALL N PL FIT") and logs "Can not load torch" at CRITICAL, then works."""
  logging.disable(logging.CRITICAL)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logging.disable(logging.NOTSET)


def weightwatcher_analyze(mats: dict[str, np.ndarray], folder: str):
  """A function running `WeightWatcher.analyze()` on `mats` (written as flat files into `folder`), and a
  note; or None and the reason why it cannot run."""
  try:
    with _quiet():
      import weightwatcher
      write_ww_flatfiles(mats, folder)
  except Exception as e:  # noqa: BLE001 - any import failure means "not available"
    return None, f"weightwatcher unavailable ({type(e).__name__}: {e}); try `pip install weightwatcher`"
  with _quiet():
    watcher = weightwatcher.WeightWatcher(model=folder)

  def analyze():
    with _quiet():
      return watcher.analyze()

  return analyze, f"weightwatcher {weightwatcher.__version__}"


def main(argv) -> None:
  del argv
  mats = vgg19_matrices()
  device_mats = {k: jnp.asarray(v) for k, v in mats.items()}
  begin = time.perf_counter()
  ours = jax.block_until_ready(jax_all(device_mats))
  compile_s = time.perf_counter() - begin
  one = jax.jit(spectral.esd_and_residuals)
  ref = numpy_all(mats, scipy.linalg.svdvals)

  # per layer: one compiled call against SciPy, interleaved; and the accuracy check
  rows, worst = [], 0.0
  for name, W in mats.items():
    m, n = W.shape
    t = interleaved_medians({"jax": lambda: one(device_mats[name]),
                             "scipy": lambda: numpy_one(W, scipy.linalg.svdvals)}, FLAGS.repeats)
    err = max_relative_error(ours[name][0], ref[name][0], m, n)
    res_err = float(np.max(np.abs(np.asarray(ours[name][1], np.float64) - ref[name][1])))
    worst = max(worst, err)
    rows.append([name, f"{m}x{n}", f"{1e3 * t['jax']:.2f}", f"{1e3 * t['scipy']:.2f}",
                 f"{t['scipy'] / t['jax']:.1f}x", f"{err:.1e}", f"{res_err:.1e}"])
  print(f"VGG19 (Glorot init), {len(mats)} layers; jax {jax.__version__} on {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}")
  print(table(rows, ["layer", "m x n", "jax ms", "scipy64 ms", "speed-up", "max rel err eig (top 90%)",
                     "max abs err r(k)"]))

  contenders = {
    "jax float32, one program for all layers": lambda: jax_all(device_mats),
    "jax float32, one compiled call per layer": lambda: [one(W) for W in device_mats.values()],
    "scipy.linalg.svdvals float64, per layer": lambda: numpy_all(mats, scipy.linalg.svdvals),
    "numpy.linalg.svd float64, per layer": lambda: numpy_all(mats, lambda w: np.linalg.svd(w, compute_uv=False)),
  }
  with tempfile.TemporaryDirectory() as folder:
    ww_note = "weightwatcher skipped (--noweightwatcher)"
    if FLAGS.weightwatcher:
      analyze, ww_note = weightwatcher_analyze(mats, folder)
      if analyze is not None:
        details = analyze()
        top = {name: float(np.max(np.asarray(ours[name][0]))) for name in mats}
        diff = max(abs(r.lambda_max - top[r.name]) / top[r.name] for r in details.itertuples())
        ww_note += (f": analyze() with defaults (ESD, MP and power-law fits) on {len(details)} layers; its "
                    f"lambda_max matches ours to {diff:.1e} relative")
        contenders["weightwatcher analyze()"] = lambda: (analyze(), None)[1]
    t = interleaved_medians(contenders, FLAGS.repeats)
  base = min(t[k] for k in contenders if k.startswith("jax"))
  print()
  print(table([[name, f"{s:.3f}", f"{s / base:.1f}x"] for name, s in t.items()],
              ["all 19 layers: ESD + residual curves", "median s", "time / fastest jax"]))
  print(f"jax compile (first call, not timed above): {compile_s:.2f}s. {ww_note}.")
  status = "PASS" if worst <= TOLERANCE else "FAIL"
  print(f"eigenvalues vs SciPy float64, top 90% of every spectrum: max relative error {worst:.1e} "
        f"(tolerance {TOLERANCE:g}): {status}")
  record("spectral", {"median_s": t, "compile_s": compile_s, "max_relative_error": worst})


if __name__ == "__main__":
  app.run(main)

"""Spectra of layer weight matrices (DEFINITIONS.md section 4): ESD, Marchenko-Pastur, residuals, elbow, low rank.
The accuracy of the low-rank replacements on data is in `subspace.py`.

A layer is its unit matrix W (m units, n inputs; `units.unit_matrix`: a Dense kernel transposed, a
Conv kernel as (c_out, kh*kw*c_in)). Everything below is a pure function of arrays:

  lam = esd(W)                                  # eigenvalues of W W^T, ascending, length m
  fit = fit_marchenko_pastur(lam, m=m, n=n)     # bulk scale, edges, spikes above lambda_+
  r = residuals(W)                              # r[k] = sum_{i>k} s_i^2 / sum_i s_i^2, k = 0..min(m, n)
  k = int(elbow(r))                             # farthest point below the chord of r(1..p-1)
  W_k, W_nk = low_rank(W, k), project_update(W, W0, k)

Eigenvalues come from singular values (never from a float32 Gram matrix, which loses the small ones).
Rectangular matrices are first reduced to their square R factor by a QR decomposition: the singular
values are the same and LAPACK's SVD of the small square factor is several times faster on CPU.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from redundancy_jax.core.errors import BadOption


# 99th percentile of the Tracy-Widom law for beta = 1 (real matrices); Johnstone 2001, Table 1.
TW1_QUANTILE_99 = 2.0234
# Quantile levels of the bulk matched by `fit_marchenko_pastur` (robust to up to 25% outliers on top).
FIT_LEVELS = tuple(float(q) for q in np.linspace(0.05, 0.75, 15))
# The second, documented bulk-fit rule each count is reported under (its sensitivity): the median alone.
SECOND_FIT_LEVELS = (0.5,)
NEAR_EDGE = 0.01  # eigenvalues within this fraction of lambda_+ (either side) are reported as borderline


class SpectralError(BadOption):
  """A matrix or request the subspace analysis cannot handle (zero, non-finite, bad rank)."""


class MPFit(NamedTuple):
  """A Marchenko-Pastur law fitted to a layer's bulk, and the eigenvalues it leaves outside."""

  var: jax.Array  # entry variance v
  s2: jax.Array  # n * v
  lambda_minus: jax.Array
  lambda_plus: jax.Array
  tw_margin: jax.Array  # TW1_QUANTILE_99 Tracy-Widom scales above lambda_plus
  spikes: jax.Array  # eigenvalues > lambda_plus
  spikes_tw: jax.Array  # eigenvalues > lambda_plus + tw_margin


# ----------------------------------------------------------------------------- checks


def _what(layer: str | None) -> str:
  return f"layer {layer!r}" if layer else "the weight matrix"


def check_matrix(W, layer: str | None = None) -> jax.Array:
  """W as a 2-d array; an error naming the layer when it is all zero or holds NaN or infinity.

  The value checks run only on concrete arrays (not inside `jit`/`vmap`).
  """
  W = jnp.asarray(W)
  if W.ndim != 2 or min(W.shape) == 0:
    raise SpectralError(f"{_what(layer)} must be a non-empty 2-d (units, inputs) matrix, got shape {W.shape}")
  if not isinstance(W, jax.core.Tracer):
    host = np.asarray(W)  # checked on the host: no compilation per shape
    if not np.isfinite(host).all():
      raise SpectralError(f"{_what(layer)} has non-finite weights (NaN or inf); was training diverging?")
    if not host.any():
      raise SpectralError(f"{_what(layer)} is all zeros: it has no spectrum to analyse")
  return W


def check_rank(k, shape: tuple[int, int], layer: str | None = None):
  """k itself when 1 <= k <= min(m, n) - 1 (skipped for traced k), else an error naming the range."""
  p = min(shape)
  if isinstance(k, jax.core.Tracer):
    return k
  ks = np.atleast_1d(np.asarray(k))
  if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or ks.min() < 1 or ks.max() > p - 1:
    valid = f"1..{p - 1}" if p > 1 else "none (min(m, n) = 1)"
    raise SpectralError(f"rank k={np.asarray(k).tolist()} of {_what(layer)} {tuple(shape)} is outside {valid}")
  return k


# ----------------------------------------------------------------------------- spectra


@jax.jit
def _singular_values(W: jax.Array) -> jax.Array:
  m, n = W.shape
  if m != n:  # same singular values, smaller SVD
    W = jnp.linalg.qr(W.T if m < n else W, mode="r")
  return jnp.linalg.svd(W, compute_uv=False)


@jax.jit
def _spectrum(W: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(eigenvalues of W W^T ascending, residual curve r[0..p]) from one SVD."""
  s2 = jnp.square(_singular_values(W))
  eigenvalues = jnp.concatenate([jnp.zeros(W.shape[0] - s2.shape[0], s2.dtype), s2[::-1]])
  tail = jnp.cumsum(s2[::-1])[::-1]  # summed from the small end: no 1 - cumsum cancellation near 0
  return eigenvalues, jnp.concatenate([tail, jnp.zeros(1, tail.dtype)]) / tail[0]


def singular_values(W, *, layer: str | None = None) -> jax.Array:
  """The min(m, n) singular values of W, descending."""
  return _singular_values(check_matrix(W, layer))


def esd(W, *, layer: str | None = None) -> jax.Array:
  """Eigenvalues of X = W W^T, ascending, length m: squared singular values plus m - n exact zeros."""
  return _spectrum(check_matrix(W, layer))[0]


def glorot_variance(kernel_shape: Sequence[int]) -> float:
  """Entry variance of a Glorot (fan-average) initialisation: 2 / (fan_in + fan_out).

  For a conv kernel (kh, kw, c_in, c_out) both fans include the receptive field kh*kw, so the unit
  matrix (c_out, kh*kw*c_in) has variance 2 / (kh*kw*(c_in + c_out)), not 2 / (m + n).
  """
  receptive = math.prod(kernel_shape[:-2]) if len(kernel_shape) > 2 else 1
  return 2.0 / (receptive * (kernel_shape[-2] + kernel_shape[-1]))


def marchenko_pastur_edges(*, m: int, n: int, var) -> tuple[jax.Array, jax.Array]:
  """(lambda_-, lambda_+) = s2 (1 -+ 1/sqrt(Q))^2 with Q = n/m and s2 = n * var."""
  q, s2 = n / m, n * jnp.asarray(var, jnp.float32)
  return s2 * (1 - 1 / math.sqrt(q)) ** 2, s2 * (1 + 1 / math.sqrt(q)) ** 2


@functools.partial(jax.jit, static_argnames=("m", "n"))
def marchenko_pastur_pdf(lam, *, m: int, n: int, var) -> jax.Array:
  """Density of the continuous part of the ESD of W W^T: Q/(2 pi s2 lam) sqrt((l+ - lam)(lam - l-)).

  It integrates to min(1, Q); when Q < 1 the remaining 1 - Q is a point mass at 0 (not included).
  """
  q, s2 = n / m, n * jnp.asarray(var, jnp.float32)
  lo, hi = marchenko_pastur_edges(m=m, n=n, var=var)
  lam = jnp.asarray(lam, jnp.float32)
  inside = (lam > lo) & (lam < hi)
  root = jnp.sqrt(jnp.maximum((hi - lam) * (lam - lo), 0.0))
  return jnp.where(inside, q * root / (2 * jnp.pi * s2 * jnp.where(inside, lam, 1.0)), 0.0)


def _mp_quantiles(levels: jax.Array, q: float, points: int = 4096) -> jax.Array:
  """Quantiles of the continuous MP part (normalised to mass 1) for s2 = 1.

  Integrates in theta with lam = l- + (l+ - l-)(1 - cos theta)/2, which makes the integrand smooth
  (no square-root singularities at the edges), by the midpoint rule.
  """
  lo, hi = (1 - 1 / math.sqrt(q)) ** 2, (1 + 1 / math.sqrt(q)) ** 2
  theta = (jnp.arange(points) + 0.5) * jnp.pi / points
  lam = lo + (hi - lo) * jnp.sin(theta / 2) ** 2  # (1 - cos theta) / 2 without cancellation near 0
  weight = ((hi - lo) / 2) ** 2 * jnp.sin(theta) ** 2 / lam
  cdf = jnp.cumsum(weight) / jnp.sum(weight)
  edges = lo + (hi - lo) * jnp.sin((theta + jnp.pi / (2 * points)) / 2) ** 2  # right end of each cell
  return jnp.interp(levels, jnp.concatenate([jnp.zeros(1), cdf]), jnp.concatenate([jnp.full(1, lo), edges]))


def tracy_widom_margin(*, m: int, n: int, var, quantile: float = TW1_QUANTILE_99) -> jax.Array:
  """`quantile` Tracy-Widom scales: var (sqrt n + sqrt m)(1/sqrt n + 1/sqrt m)^(1/3) (Johnstone 2001).

  The largest eigenvalue of a pure-noise W W^T fluctuates around lambda_+ = var (sqrt n + sqrt m)^2
  on this scale, so an eigenvalue more than the 99th percentile above lambda_+ is a spike.
  """
  rn, rm = math.sqrt(n), math.sqrt(m)
  return quantile * jnp.asarray(var, jnp.float32) * (rn + rm) * (1 / rn + 1 / rm) ** (1 / 3)


def fit_marchenko_pastur(eigenvalues, *, m: int, n: int, levels: Sequence[float] = FIT_LEVELS) -> MPFit:
  """Fits the bulk's scale s2 = n var and counts the eigenvalues above lambda_+ (spikes).

  Method: quantile matching. The min(m, n) largest eigenvalues (the continuous part) are compared with
  the MP quantiles for s2 = 1 at `levels` (5%..75%); as every MP quantile is proportional to s2, s2 is
  the least-squares slope through the origin. Spikes and a low-rank signal only move the top of the
  spectrum, so they do not pull the fit as long as they are fewer than 25% of the eigenvalues.
  """
  if np.shape(eigenvalues) != (m,):
    raise SpectralError(f"expected the {m} eigenvalues of W W^T, got shape {np.shape(eigenvalues)}")
  return _fit(jnp.asarray(eigenvalues, jnp.float32), m=m, n=n, levels=tuple(levels))


@functools.partial(jax.jit, static_argnames=("m", "n", "levels"))
def _fit(eigenvalues: jax.Array, *, m: int, n: int, levels: tuple[float, ...]) -> MPFit:
  lam = jnp.sort(eigenvalues)
  levels = jnp.asarray(levels, jnp.float32)
  ref = _mp_quantiles(levels, n / m)
  emp = jnp.quantile(lam[m - min(m, n) :], levels)
  s2 = jnp.sum(emp * ref) / jnp.sum(ref * ref)
  var = s2 / n
  lo, hi = marchenko_pastur_edges(m=m, n=n, var=var)
  margin = tracy_widom_margin(m=m, n=n, var=var)
  return MPFit(var, s2, lo, hi, margin, jnp.sum(lam > hi), jnp.sum(lam > hi + margin))


def count_spikes(eigenvalues, threshold) -> jax.Array:
  """Number of eigenvalues strictly above `threshold` (e.g. lambda_+, or lambda_+ plus a TW margin)."""
  return jnp.sum(jnp.asarray(eigenvalues) > threshold)


# ----------------------------------------------------------------------------- low rank


def truncate(U: jax.Array, s: jax.Array, Vt: jax.Array, k) -> jax.Array:
  """sum_{i<=k} s_i u_i v_i^T from a thin SVD; `k` may be traced (vmappable over k)."""
  return (U * jnp.where(jnp.arange(s.shape[0]) < k, s, 0.0)) @ Vt


@jax.jit
def _low_rank(W: jax.Array, k) -> jax.Array:
  return truncate(*jnp.linalg.svd(W, full_matrices=False), k)


def low_rank(W, k: int, *, layer: str | None = None) -> jax.Array:
  """W_k = sum_{i<=k} s_i u_i v_i^T, the best rank-k approximation (Eckart-Young); 1 <= k < min(m, n)."""
  W = check_matrix(W, layer)
  check_rank(k, W.shape, layer)
  return _low_rank(W, k)


def project_update(W, W0, k: int, *, layer: str | None = None) -> jax.Array:
  """Nagarajan and Kolter: W0 + P_k (W - W0), P_k the projection onto the top-k left singular vectors
  of the update. Since P_k D = D_k, this is W0 plus the rank-k truncation of the update."""
  W, W0 = check_matrix(W, layer), jnp.asarray(W0)
  if W0.shape != W.shape:
    raise SpectralError(f"{_what(layer)}: initial weights {W0.shape} do not match trained {W.shape}")
  update = check_matrix(W - W0, f"{layer or 'matrix'} update W - W0")
  check_rank(k, W.shape, layer)
  return W0 + _low_rank(update, k)


def residuals(W, *, layer: str | None = None) -> jax.Array:
  """r[k] = sum_{i>k} s_i^2 / sum_i s_i^2 = ||W - W_k||_F^2 / ||W||_F^2 for k = 0..min(m, n).

  Summed from the small end, so r stays accurate near 0 (no 1 - cumsum cancellation).
  """
  return _spectrum(check_matrix(W, layer))[1]


def esd_and_residuals(W, *, layer: str | None = None) -> tuple[jax.Array, jax.Array]:
  """`esd(W)` and `residuals(W)` from one singular value decomposition."""
  return _spectrum(check_matrix(W, layer))


def kept_norm(r: jax.Array, k) -> jax.Array:
  """||W_k||_F / ||W||_F = sqrt(1 - r(k)), from the residual curve."""
  return jnp.sqrt(jnp.maximum(1.0 - r[k], 0.0))


def elbow(r) -> jax.Array:
  """The elbow of the residual curve: the k in 1..p-1 (p = len(r) - 1 = min(m, n)) farthest from the
  chord joining (1, r(1)) and (p-1, r(p-1)), on the side below it. Ties go to the smaller k.

  Perpendicular distance to a fixed line is proportional to the vertical gap, so the choice does not
  depend on how the axes are scaled. For a convex curve it is the first k whose drop r(k-1) - r(k)
  = s_k^2 / sum s^2 falls below the chord's slope (r(1) - r(p-1)) / (p - 2).
  """
  p = np.shape(r)[0] - 1
  if p < 2:
    raise SpectralError(f"a residual curve needs min(m, n) >= 2 to have a rank 1..min(m, n)-1, got {p}")
  return _elbow(jnp.asarray(r, jnp.float32))


@jax.jit
def _elbow(r: jax.Array) -> jax.Array:
  p = r.shape[0] - 1
  if p == 2:
    return jnp.asarray(1, jnp.int32)
  ks = jnp.arange(1, p)
  chord = r[1] + (r[p - 1] - r[1]) * (ks - 1) / (p - 2)
  return (ks[jnp.argmax(chord - r[1:p])]).astype(jnp.int32)


@jax.jit
def _summary_arrays(W: jax.Array, init_var: jax.Array) -> dict:
  m, n = W.shape
  lam, r = _spectrum(W)
  fit = _fit(lam, m=m, n=n, levels=FIT_LEVELS)
  init_edges = marchenko_pastur_edges(m=m, n=n, var=init_var)
  init_margin = tracy_widom_margin(m=m, n=n, var=init_var)
  out = {
    "eigenvalues": lam, "init_edges": init_edges, "init_spikes": count_spikes(lam, init_edges[1]),
    "init_spikes_tw": count_spikes(lam, init_edges[1] + init_margin), "fit": fit._asdict(), "residuals": r,
    "sensitivity": sensitivity(lam, fit, m=m, n=n),
  }
  if min(m, n) >= 2:
    k = _elbow(r)
    out.update(elbow=k, kept_norm_percent=100 * kept_norm(r, k))
  return out


def sensitivity(eigenvalues, fit: MPFit, *, m: int, n: int) -> dict:
  """How far a spike count depends on the bulk fit: the count above lambda_+ of the second rule
  (`SECOND_FIT_LEVELS`, the median matched), and how many eigenvalues lie within `NEAR_EDGE` of the
  fitted lambda_+ (either side)."""
  lam = jnp.asarray(eigenvalues)
  second = _fit(lam, m=m, n=n, levels=SECOND_FIT_LEVELS)
  return {"spikes_second_fit": second.spikes, "lambda_plus_second_fit": second.lambda_plus,
          "near_edge": jnp.sum(jnp.abs(lam - fit.lambda_plus) <= NEAR_EDGE * fit.lambda_plus)}


def summarize(W, *, init_var: float, layer: str | None = None) -> dict:
  """Everything the figures and tables need about one matrix, as JSON-ready Python values: its ESD,
  the MP law of the initialisation (entry variance `init_var`) and the fitted one with their spike
  counts (and their `sensitivity` to the fit), the residual curve, the elbow k and 100 ||W_k||_F / ||W||_F
  (one compiled program)."""
  W = check_matrix(W, layer)
  m, n = W.shape
  out = jax.tree.map(lambda a: np.asarray(a).tolist(), _summary_arrays(W, jnp.float32(init_var)))
  return {"m": m, "n": n, "Q": n / m, "init_var": init_var, **out}

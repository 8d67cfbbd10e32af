import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.optimize

from redundancy_jax.analyses import spectral
from redundancy_jax.analyses.units import kernel_from_units, unit_matrix
from redundancy_jax.models import init_variables


_init = jax.jit(init_variables, static_argnums=(0, 2))  # one compilation instead of one per op


def _glorot(m, n, seed=0):
  return (np.random.default_rng(seed).standard_normal((m, n)) * np.sqrt(2 / (m + n))).astype(np.float32)


# ----------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("m, n", [(300, 784), (256, 256), (512, 256), (64, 27), (10, 512)])
def test_esd_matches_scipy_float64(m, n):
  W = _glorot(m, n)
  ours = np.asarray(spectral.esd(W), np.float64)
  s = scipy.linalg.svdvals(W.astype(np.float64))
  ref = np.sort(np.concatenate([np.zeros(max(m - n, 0)), s**2]))
  assert ours.shape == (m,) and np.all(np.diff(ours) >= 0)
  assert np.all(ours[: max(m - n, 0)] == 0.0)  # exact zeros when m > n
  top = int(np.ceil(0.9 * min(m, n)))
  np.testing.assert_allclose(ours[-top:], ref[-top:], rtol=1e-4)
  np.testing.assert_allclose(ours, ref, atol=1e-5 * ref.max())


# ----------------------------------------------------------------------------- Marchenko-Pastur
#
# The law of the eigenvalues of W W^T, W (m, n) with i.i.d. entries of variance v; Q = n/m, s2 = n v,
# c = 1/Q = m/n. Each test checks the implementation against something worked out without it:
#
# - Moments, from traces. E[lam^k] = (1/m) E tr (W W^T)^k.
#   k = 1: E tr W W^T = sum_il E W_il^2 = m n v, so the whole law has mean n v = s2.
#   k = 2: E tr (W W^T)^2 = sum_i E (sum_l W_il^2)^2 + sum_{i != j} E (sum_l W_il W_jl)^2
#        = m v^2 (n^2 + 2n) + m (m - 1) n v^2, so E[lam^2] = v^2 n (n + m + 1) -> s2^2 (1 + c).
#   In general the limit is s2^k N_k(c), N_k(c) = sum_{r<k} c^r C(k, r) C(k-1, r) / (r + 1) (Narayana
#   polynomials; Bai and Silverstein 2010, Lemma 3.1): N_1 = 1, N_2 = 1 + c, N_3 = 1 + 3c + c^2.
#   The point mass 1 - Q at 0 (when Q < 1) adds nothing to a moment k >= 1, so the continuous density
#   alone has these moments k >= 1 and mass min(1, Q): its own mean is s2 / min(1, Q).
# - Edges, from the extreme eigenvalues of large sampled Gaussian matrices.
# - Quantiles, from scipy's adaptive quadrature (QAWS, which carries the square-root edges as an
#   algebraic weight) inverted by root finding.
# - The Tracy-Widom margin, from the largest eigenvalue of many sampled pure-noise matrices.


def _narayana(k: int, c: float) -> float:
  return sum(c**r * math.comb(k, r) * math.comb(k - 1, r) / (r + 1) for r in range(k))


@pytest.mark.parametrize("m, n", [(100, 400), (300, 784), (200, 200), (400, 100), (512, 128)])
def test_marchenko_pastur_pdf_mass_and_moments(m, n):
  var, q = 0.013, n / m
  s2, c = n * var, m / n
  lo, hi = (float(e) for e in spectral.marchenko_pastur_edges(m=m, n=n, var=var))
  pdf = lambda lam: float(spectral.marchenko_pastur_pdf(np.float32(lam), m=m, n=n, var=var))

  def moment(k):
    # lam = lo + (hi - lo) sin^2(phi): the square-root edges (and 1/sqrt(lam) at lo = 0 when Q = 1)
    # become a smooth integrand on [0, pi/2]
    def f(phi):
      lam = lo + (hi - lo) * math.sin(phi) ** 2
      return lam**k * pdf(lam) * (hi - lo) * math.sin(2 * phi)

    return scipy.integrate.quad(f, 0, math.pi / 2, epsabs=0, epsrel=1e-7, limit=200)[0]

  mass = moment(0)
  assert mass == pytest.approx(min(1.0, q), rel=1e-4)
  assert moment(1) / mass == pytest.approx(s2 / min(1.0, q), rel=1e-4)  # mean of the continuous part
  for k in (1, 2, 3, 4):
    assert moment(k) == pytest.approx(s2**k * _narayana(k, c), rel=1e-4), k
  for outside in (-0.1 * hi, 0.999 * lo, 1.001 * hi, 2 * hi):
    assert pdf(outside) == 0.0


@pytest.mark.parametrize("m, n", [(400, 1600), (1600, 400), (500, 500)])
def test_marchenko_pastur_edges_bound_a_sampled_spectrum(m, n):
  """The nonzero eigenvalues of one large Gaussian W W^T fill the support: the largest and smallest lie
  at lambda_+ and lambda_- within their Tracy-Widom fluctuation (about 1% and 2% here)."""
  var = 0.02
  s = scipy.linalg.svdvals(np.random.default_rng(7).standard_normal((m, n)) * math.sqrt(var))
  largest, smallest = s[0] ** 2, s[-1] ** 2  # smallest of the min(m, n) nonzero eigenvalues
  lo, hi = (float(e) for e in spectral.marchenko_pastur_edges(m=m, n=n, var=var))
  assert largest == pytest.approx(hi, rel=0.03)
  if m == n:
    assert lo == 0.0 and smallest < 1e-3 * hi
  else:
    assert smallest == pytest.approx(lo, rel=0.05)
  inside = np.linspace(lo, hi, 9)[1:-1]
  assert np.all(np.asarray(spectral.marchenko_pastur_pdf(inside, m=m, n=n, var=var)) > 0)


def test_glorot_dense_bulk_scale_is_2q_over_1_plus_q():
  m, n = 300, 784
  var = spectral.glorot_variance((n, m))
  q = n / m
  assert n * var == pytest.approx(2 * q / (1 + q))
  assert spectral.glorot_variance((3, 3, 64, 128)) == pytest.approx(2 / (9 * (64 + 128)))


def _mp_support(q: float) -> tuple[float, float]:
  return (1 - 1 / math.sqrt(q)) ** 2, (1 + 1 / math.sqrt(q)) ** 2


def _mp_reference_quantiles(levels, q: float) -> np.ndarray:
  """Quantiles of the continuous MP part for s2 = 1, normalised to mass 1, by scipy.

  Up to its constant Q / (2 pi) the density on [a, b] is sqrt((b - t)(t - a)) / t. `quad` with
  weight="alg" integrates f(t) (t - a)^alpha (x - t)^beta exactly in the weight, so the square-root
  edges (and t^(-1/2) at a = 0 when Q = 1) are no trouble; `brentq` inverts the resulting CDF.
  """
  a, b = _mp_support(q)
  alpha, rest = (-0.5, lambda t: 1.0) if a == 0.0 else (0.5, lambda t: 1.0 / t)

  def mass_below(x):
    if x == b:
      return scipy.integrate.quad(rest, a, b, weight="alg", wvar=(alpha, 0.5), epsabs=0, epsrel=1e-11)[0]
    f = lambda t: rest(t) * math.sqrt(b - t)
    return scipy.integrate.quad(f, a, x, weight="alg", wvar=(alpha, 0.0), epsabs=0, epsrel=1e-11, limit=200)[0]

  total = mass_below(b)
  return np.array(
    [scipy.optimize.brentq(lambda x: mass_below(x) - level * total, a, b, xtol=1e-14) for level in levels]
  )


@pytest.mark.parametrize("q", [784 / 300, 4.0, 1.0, 0.25])  # Q = 1: lambda_- = 0 carries mass
def test_mp_quantiles_match_scipy_quadrature(q):
  levels = np.array([0.01, *spectral.FIT_LEVELS, 0.9, 0.99])
  ours = np.asarray(spectral._mp_quantiles(jnp.asarray(levels, jnp.float32), q))
  np.testing.assert_allclose(ours, _mp_reference_quantiles(levels, q), rtol=1e-3)


@pytest.mark.parametrize("m, n", [(301, 784), (241, 241), (484, 121)])
def test_fit_marchenko_pastur_on_exact_mp_quantiles(m, n):
  """A spectrum made of the MP law's own quantiles (scipy reference, s2 = 1.7) is fitted exactly and has
  no spike; moving its top five eigenvalues far above the bulk makes five spikes and leaves the fit (which
  matches quantiles 5%..75% only) where it was. min(m, n) - 1 is a multiple of 20, so every fitted level
  (a multiple of 5%) falls on an eigenvalue and no interpolation enters."""
  p, s2, (a, b) = min(m, n), 1.7, _mp_support(n / m)
  levels = np.linspace(0.0, 1.0, p)
  levels[[0, -1]] = 1e-3, 1 - 1e-3  # keep the end points strictly inside the support
  bulk = s2 * _mp_reference_quantiles(levels, n / m)
  lam = np.concatenate([np.zeros(m - p), bulk]).astype(np.float32)  # plus m - n exact zeros when m > n
  fit = spectral.fit_marchenko_pastur(lam, m=m, n=n)
  assert float(fit.s2) == pytest.approx(s2, rel=1e-3)
  assert float(fit.var) == pytest.approx(s2 / n, rel=1e-3)
  assert float(fit.lambda_minus) == pytest.approx(s2 * a, abs=1e-3 * s2 * b)
  assert float(fit.lambda_plus) == pytest.approx(s2 * b, rel=1e-3)
  assert int(fit.spikes) == 0 and int(fit.spikes_tw) == 0
  lam[-5:] = 3 * s2 * b
  spiked = spectral.fit_marchenko_pastur(lam, m=m, n=n)
  assert float(spiked.s2) == pytest.approx(s2, rel=1e-3)
  assert int(spiked.spikes) == 5 and int(spiked.spikes_tw) == 5


@pytest.mark.parametrize("m, n", [(300, 784), (256, 256), (512, 256)])
def test_fit_recovers_noise_scale_and_planted_spikes(m, n):
  W = _glorot(m, n, seed=1)
  var = 2 / (m + n)
  fit = spectral.fit_marchenko_pastur(spectral.esd(W), m=m, n=n)
  assert float(fit.var) == pytest.approx(var, rel=0.03)
  assert int(fit.spikes_tw) == 0
  rng = np.random.default_rng(2)
  u, _ = np.linalg.qr(rng.standard_normal((m, 3)))
  v, _ = np.linalg.qr(rng.standard_normal((n, 3)))
  lam_plus = var * (np.sqrt(n) + np.sqrt(m)) ** 2
  spiked = W + (u * np.sqrt(3 * lam_plus)) @ v.T  # three directions well above the bulk edge
  fit = spectral.fit_marchenko_pastur(spectral.esd(spiked), m=m, n=n)
  assert float(fit.var) == pytest.approx(var, rel=0.05)
  assert int(fit.spikes) >= 3 and int(fit.spikes_tw) == 3


def test_tracy_widom_margin_against_sampled_largest_eigenvalues():
  """Johnstone (2001), with the n - 1/2, m - 1/2 corrections of Ma (2012) that make the limit accurate
  already at m = 100: for W (m, n) of N(0, v) entries, (lam_max - mu) / sigma tends to TW1 (mean -1.2065,
  standard deviation 1.2680, 99th percentile 2.0234), where with a = sqrt(n - 1/2), b = sqrt(m - 1/2):
  mu = v (a + b)^2 and sigma = v (a + b) (1/a + 1/b)^(1/3). The library's margin above lambda_+ is
  2.0234 sigma without the corrections; here its scale is checked on 200 pure-noise 100 x 400 matrices."""
  m, n, var, trials = 100, 400, 0.5, 200
  W = np.random.default_rng(11).standard_normal((trials, m, n)) * math.sqrt(var)
  largest = np.linalg.eigvalsh(W @ W.transpose(0, 2, 1))[:, -1]
  a, b = math.sqrt(n - 0.5), math.sqrt(m - 0.5)
  mu, sigma = var * (a + b) ** 2, var * (a + b) * (1 / a + 1 / b) ** (1 / 3)
  scale = float(spectral.tracy_widom_margin(m=m, n=n, var=var, quantile=1.0))
  assert scale == pytest.approx(sigma, rel=0.01)
  z = (largest - mu) / scale
  assert z.mean() == pytest.approx(-1.2065, abs=0.3)  # standard error 1.27 / sqrt(200) = 0.09
  assert 1.0 < z.std() < 1.6
  lam_plus = float(spectral.marchenko_pastur_edges(m=m, n=n, var=var)[1])
  threshold = lam_plus + float(spectral.tracy_widom_margin(m=m, n=n, var=var))
  assert np.mean(largest > threshold) <= 0.05  # about 1% expected


# ----------------------------------------------------------------------------- low rank


@pytest.mark.parametrize("m, n", [(40, 90), (60, 60), (90, 40)])
def test_low_rank_is_eckart_young(m, n):
  W = _glorot(m, n, seed=3)
  W64 = W.astype(np.float64)
  U, s, Vt = np.linalg.svd(W64, full_matrices=False)
  r = np.asarray(spectral.residuals(W), np.float64)
  assert r.shape == (min(m, n) + 1,) and r[0] == pytest.approx(1.0) and r[-1] == 0.0
  for k in (1, 7, min(m, n) - 1):
    Wk = np.asarray(spectral.low_rank(W, k), np.float64)
    np.testing.assert_allclose(Wk, (U[:, :k] * s[:k]) @ Vt[:k], atol=1e-5)
    assert np.linalg.matrix_rank(Wk, tol=1e-4) == k
    remaining = np.sum(s[k:] ** 2) / np.sum(s**2)
    assert r[k] == pytest.approx(remaining, rel=1e-4)
    assert np.sum((W64 - Wk) ** 2) / np.sum(W64**2) == pytest.approx(remaining, rel=1e-3)
    assert float(spectral.kept_norm(jnp.asarray(r), k)) == pytest.approx(
      np.linalg.norm(Wk) / np.linalg.norm(W64), rel=1e-4)


def test_elbow_on_hand_built_curves():
  # chord from (1, .5) to (7, .05); the gap below it is largest at k = 2
  r = jnp.array([1.0, 0.5, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.0])
  assert int(spectral.elbow(r)) == 2
  # rescaling the curve does not move the elbow
  assert int(spectral.elbow(0.3 * r)) == 2
  # a straight line: every gap is 0, the tie goes to the smallest k
  assert int(spectral.elbow(jnp.linspace(1.0, 0.0, 11))) == 1
  assert int(spectral.elbow(jnp.array([1.0, 0.4, 0.0]))) == 1  # p = 2: only k = 1
  with pytest.raises(spectral.SpectralError, match="min"):
    spectral.elbow(jnp.array([1.0, 0.0]))


def test_elbow_finds_planted_rank():
  rng = np.random.default_rng(4)
  u, _ = np.linalg.qr(rng.standard_normal((80, 5)))
  v, _ = np.linalg.qr(rng.standard_normal((120, 5)))
  W = (u * np.array([10.0, 9, 8, 7, 6])) @ v.T + 0.01 * rng.standard_normal((80, 120))
  assert int(spectral.elbow(spectral.residuals(W))) == 5


def test_project_update_by_hand():
  W0 = np.ones((3, 2), np.float32)
  W = W0 + np.array([[3.0, 0], [0, 1], [0, 0]], np.float32)  # update: s = (3, 1), u = (e1, e2)
  np.testing.assert_allclose(spectral.project_update(W, W0, 1), [[4, 1], [1, 1], [1, 1]], atol=1e-6)
  # on a random matrix: W0 + U_k U_k^T (W - W0) with NumPy float64
  rng = np.random.default_rng(5)
  W0, W = rng.standard_normal((30, 50)), rng.standard_normal((30, 50))
  U = np.linalg.svd(W - W0)[0][:, :4]
  np.testing.assert_allclose(spectral.project_update(W.astype(np.float32), W0.astype(np.float32), 4),
                             W0 + U @ U.T @ (W - W0), atol=1e-4)


def test_kernel_from_units_inverts_unit_matrix():
  rng = np.random.default_rng(6)
  params = {"conv1": {"kernel": rng.standard_normal((3, 3, 4, 8))}, "fc1": {"kernel": rng.standard_normal((12, 5))}}
  for layer in ("conv1", "fc1"):
    kernel = params[layer]["kernel"]
    assert unit_matrix(params, layer).shape == (kernel.shape[-1], kernel.size // kernel.shape[-1])
    np.testing.assert_array_equal(kernel_from_units(unit_matrix(params, layer), kernel.shape), kernel)


def test_bad_input_errors_name_the_layer_and_range():
  W = _glorot(6, 4)
  for k in (0, 4, 5, -1):
    with pytest.raises(spectral.SpectralError, match=r"1\.\.3"):
      spectral.low_rank(W, k, layer="fc1")
  with pytest.raises(spectral.SpectralError, match="1..3"):
    spectral.project_update(W, 0 * W + 1, 4)
  with pytest.raises(spectral.SpectralError, match="'fc2'.*all zeros"):
    spectral.esd(np.zeros((5, 3)), layer="fc2")
  bad = W.copy()
  bad[1, 2] = np.nan
  with pytest.raises(spectral.SpectralError, match="'conv3'.*non-finite"):
    spectral.residuals(bad, layer="conv3")
  with pytest.raises(spectral.SpectralError, match="fc1 update"):
    spectral.project_update(W, W, 1, layer="fc1")
  with pytest.raises(spectral.SpectralError, match="2-d"):
    spectral.esd(np.ones(4))


def test_sensitivity_to_the_bulk_fit_against_scipy():
  """The second bulk-fit rule (the median matched to the Marchenko-Pastur median, by scipy's quadrature
  and root finding here) and the eigenvalues near the fitted edge, on Glorot noise with 3 planted spikes."""
  from scipy import integrate, optimize

  m, n = 120, 300
  rng = np.random.default_rng(0)
  W = rng.normal(0, 1 / np.sqrt(n), (m, n))
  U, _ = np.linalg.qr(rng.normal(size=(m, 3)))
  V, _ = np.linalg.qr(rng.normal(size=(n, 3)))
  W = W + U @ np.diag([3.0, 2.5, 2.0]) @ V.T
  out = spectral.summarize(W.astype(np.float32), init_var=1 / n)
  lam = np.sort(np.linalg.eigvalsh(W @ W.T))
  q = n / m
  lo, hi = (1 - 1 / np.sqrt(q)) ** 2, (1 + 1 / np.sqrt(q)) ** 2
  pdf = lambda x: np.sqrt(max((hi - x) * (x - lo), 0.0)) / x
  mass = integrate.quad(pdf, lo, hi)[0]
  median = optimize.brentq(lambda t: integrate.quad(pdf, lo, t)[0] / mass - 0.5, lo, hi)
  s2 = np.quantile(lam, 0.5) / median
  lambda_plus = s2 * hi
  sens = out["sensitivity"]
  assert sens["lambda_plus_second_fit"] == pytest.approx(lambda_plus, rel=2e-3)
  assert sens["spikes_second_fit"] == int(np.sum(lam > lambda_plus)) == 3  # the planted spikes, under both rules
  fitted = out["fit"]["lambda_plus"]
  assert sens["near_edge"] == int(np.sum(np.abs(lam - fitted) <= 0.01 * fitted))

"""Teacher-student committee machines: labels, order parameters and the closed-form error against direct
NumPy computations, the SGD step against Goldt et al.'s update written out, masking, and the script."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from experiments import teacher_student as script
from redundancy_jax.core.config import override, preset
from redundancy_jax.related import teacher_student as ts


def _phi(W, v, x):
  """sum_k v_k erf(w_k . x / sqrt(2 N)), written out in NumPy."""
  N = W.shape[1]
  return sum(v[k] * erf(x @ W[k] / np.sqrt(N) / np.sqrt(2)) for k in range(len(v)))


def test_teacher_labels_match_numpy():
  Ws, vs = ts.teacher(jax.random.key(0), 3, 50)
  x = np.random.default_rng(0).standard_normal((20, 50)).astype(np.float32)
  np.testing.assert_allclose(ts.committee(Ws, vs, x), _phi(np.asarray(Ws, np.float64), np.ones(3), x), rtol=1e-5, atol=1e-6)
  assert np.asarray(vs).tolist() == [1.0, 1.0, 1.0]


def test_student_equal_to_teacher_has_R_equal_T_and_zero_error():
  Ws, vs = ts.teacher(jax.random.key(1), 2, 40)
  Q, R, T = ts.order_parameters(Ws, Ws)
  T_np = np.asarray(Ws, np.float64) @ np.asarray(Ws, np.float64).T / 40
  np.testing.assert_allclose(R, T_np, rtol=1e-5)
  np.testing.assert_allclose(Q, T_np, rtol=1e-5)
  assert abs(float(ts.generalisation_error(Ws, vs, Ws, vs))) < 1e-6


def test_closed_form_error_matches_monte_carlo():
  """eps_g = 1/2 E[(phi - phi*)^2] of a random student against 400,000 Gaussian samples in NumPy."""
  N = 30
  Ws, vs = ts.teacher(jax.random.key(2), 2, N)
  W = 0.7 * np.random.default_rng(1).standard_normal((4, N))
  v = np.array([0.5, -1.0, 0.8, 0.3])
  x = np.random.default_rng(2).standard_normal((400_000, N))
  d = 0.5 * (_phi(W, v, x) - _phi(np.asarray(Ws, np.float64), np.ones(2), x)) ** 2
  exact = float(ts.generalisation_error(jnp.asarray(W, jnp.float32), jnp.asarray(v, jnp.float32), Ws, vs))
  assert abs(exact - d.mean()) < 4 * d.std() / np.sqrt(len(d)), (exact, d.mean())


def test_sgd_step_is_goldts_update():
  """w_k -= eta / sqrt N * v_k * Delta * g'(lambda_k) x and v_k -= eta / N * Delta * g(lambda_k), with
  g'(z) = sqrt(2 / pi) exp(-z^2 / 2); a masked unit does not move."""
  rng = np.random.default_rng(3)
  N, eta = 20, 0.7
  W, v, x, y = rng.standard_normal((3, N)), rng.standard_normal(3), rng.standard_normal(N), 0.3
  mask = np.array([1.0, 1.0, 0.0])
  lam = W @ x / np.sqrt(N)
  delta = (v * mask) @ erf(lam / np.sqrt(2)) - y
  dg = np.sqrt(2 / np.pi) * np.exp(-lam**2 / 2)
  W_hand = W - eta / np.sqrt(N) * (mask * v * delta * dg)[:, None] * x[None, :]
  v_hand = v - eta / N * delta * erf(lam / np.sqrt(2)) * mask
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  W_new, v_new = ts.sgd_step(f32(W), f32(v), f32(x), y, eta, f32(mask), train_second=True)
  np.testing.assert_allclose(W_new, W_hand, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(v_new, v_hand, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(W_new)[2], np.asarray(f32(W))[2])
  W_only, v_only = ts.sgd_step(f32(W), f32(v), f32(x), y, eta, f32(mask), train_second=False)
  np.testing.assert_array_equal(v_only, f32(v))


def test_padded_students_train_only_their_own_units():
  """K = 2 inside a sweep padded to 4: the padded units keep their initial weights, and the recorded
  error is the unpadded student's."""
  Ws, vs = ts.teacher(jax.random.key(4), 2, 25)
  out = ts.train_students(jax.random.key(5), Ws, vs, [2, 4], seeds=2, steps=200, lr=0.5, noise=0.1,
                          train_second=True, record_every=100)
  assert out["errors"].shape == (2, 2, 2) and out["W"].shape == (2, 2, 4, 25)
  keys = jax.random.split(jax.random.key(5), (2, 2, 2))
  W0, v0 = ts.init_student(keys[0, 1, 0], 4, 25, True)
  np.testing.assert_array_equal(out["W"][0, 1, 2:], np.asarray(W0)[2:])
  np.testing.assert_array_equal(out["v"][0, 1, 2:], np.asarray(v0)[2:])
  assert np.any(out["W"][0, 1, :2] != np.asarray(W0)[:2])
  own = float(ts.generalisation_error(out["W"][0, 1, :2], out["v"][0, 1, :2], Ws, vs))
  assert out["errors"][0, 1, -1] == pytest.approx(own, rel=1e-5)


def test_match_units_orders_by_teacher_then_weight():
  R = np.array([[0.9, 0.1], [0.0, -0.8], [0.7, 0.2], [0.2, 0.3]])
  v = np.array([0.2, 1.0, 0.9, 0.5])
  out = ts.match_units(R, v, np.array([1, 1, 1, 0]))  # unit 3 is padding
  assert out == {"order": [2, 0, 1], "teacher": [0, 0, 1]}


def _modes(first, both, ks=(2, 4, 8)):
  return {mode: {"ks": list(ks), "final_mean": list(final), "final_std": [0.01] * len(ks)}
          for mode, final in (("first_layer", first), ("both_layers", both))}


@pytest.mark.parametrize(
  "first, both, verdict",
  [
    ((0.01, 0.02, 0.04), (0.01, 0.01, 0.009), "holds"),
    ((0.01, 0.02, 0.04), (0.01, 0.01, 0.0105), "holds"),  # 0.0105 <= 1.1 x 0.01: flat
    ((0.01, 0.012, 0.014), (0.01, 0.01, 0.009), "does not hold"),  # 0.014 < 1.5 x 0.01: does not grow enough
    ((0.01, 0.03, 0.02), (0.01, 0.01, 0.009), "does not hold"),  # grows, but not monotonically
    ((0.01, 0.02, 0.04), (0.01, 0.01, 0.0115), "does not hold"),  # 0.0115 > 1.1 x 0.01: both layers rise
    ((0.01, 0.02, 0.04), (0.01, 0.02, 0.04), "does not hold"),
  ],
)
def test_headline_by_hand(first, both, verdict):
  assert ts.headline(_modes(first, both)).verdict == verdict


@pytest.mark.e2e
def test_script_quick_and_bad_input(tmp_path):
  """N = 100, alpha = 20, noise 0.5: Goldt et al.'s finding (their figure 2) by a wide margin: trained
  with output noise, the first layer alone overfits more the more units it has (here the error grows
  about 7-fold from K = 2 to 8, the rule asks 1.5), both layers together do not (here it falls about
  5-fold, the rule allows a 10% rise)."""
  cfg = override(preset(ts.TeacherStudentConfig()), time=20.0, workdir=str(tmp_path))
  script.main(cfg)
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["config"]["input_dim"] == 100 and results["config"]["student_units"] == [2, 4, 8]
  # 20 N = 2,000 steps in 40 records of 50 steps: alpha = 50 i / N
  assert results["time"] == pytest.approx([50 * i / 100 for i in range(1, 41)])
  first, both = (np.mean(results["modes"][m]["final"], axis=1) for m in ("first_layer", "both_layers"))
  assert len(first) == 3 and all(b > a for a, b in zip(first, first[1:])) and first[-1] > 3 * first[0], first
  assert both[-1] < both[0], both
  assert results["headlines"][0]["verdict"] == "holds", results["headlines"][0]
  curves = np.asarray(results["modes"]["first_layer"]["curve_mean"])
  assert curves.shape == (3, 40) and np.allclose(curves[:, -1], first)
  assert (tmp_path / "figure.png").stat().st_size > 0 and (tmp_path / "figure.pdf").exists()
  with pytest.raises(ValueError, match="K >= M = 2"):
    script.main(override(cfg, student_units="1,4", workdir=str(tmp_path / "bad")))
  assert not (tmp_path / "bad").exists()

"""Teacher-student soft committee machines trained by online SGD (Goldt et al. 2019; SPEC section 5).

Teacher phi*(x) = sum_m v*_m g(w*_m . x / sqrt N) with g(z) = erf(z / sqrt 2), w* entries N(0, 1),
v* = 1; inputs x ~ N(0, I_N); labels y = phi*(x) + sigma * zeta. A student of K >= M units is trained
by online SGD (a fresh sample every step) on the squared error, either its first layer only (v = 1
fixed: the soft committee machine) or both layers. The generalisation error
eps_g = 1/2 E[(phi(x) - phi*(x))^2] has a closed form in the order parameters Q = W W^T / N,
R = W W*^T / N and T = W* W*^T / N (Saad and Solla 1995), so it is exact, not sampled.

Students of different K run as one program: every student is padded to the sweep's largest K with
units masked out (`mask`), which contribute nothing and receive zero gradient.

  Ws, vs = teacher(key, M=2, N=500)
  eps = generalisation_error(W, v, Ws, vs)                      # exact
  out = train_students(key, Ws, vs, ks=[2, 4, 8], seeds=3, steps=..., lr=0.5, noise=0.5)
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def g(z):
  """The activation erf(z / sqrt 2)."""
  return jax.scipy.special.erf(z / jnp.sqrt(2.0))


def teacher(key: jax.Array, M: int, N: int) -> tuple[jax.Array, jax.Array]:
  """(W* (M, N) with N(0, 1) entries, v* = ones(M))."""
  return jax.random.normal(key, (M, N)), jnp.ones(M)


def committee(W, v, x, mask=None):
  """sum_k mask_k v_k g(w_k . x / sqrt N) for x (..., N)."""
  v = v if mask is None else v * mask
  return g(x @ W.T / jnp.sqrt(W.shape[1])) @ v


def order_parameters(W, Ws) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Q = W W^T / N (K, K), R = W W*^T / N (K, M), T = W* W*^T / N (M, M)."""
  N = W.shape[1]
  return W @ W.T / N, W @ Ws.T / N, Ws @ Ws.T / N


def _pair(A, da, db):
  """(2 / pi) arcsin(A_ij / sqrt((1 + a_i)(1 + b_j))): E[g(u) g(w)] for jointly Gaussian u, w with
  variances a_i, b_j and covariance A_ij, for g(z) = erf(z / sqrt 2)."""
  return (2 / jnp.pi) * jnp.arcsin(A / jnp.sqrt((1 + da)[:, None] * (1 + db)[None, :]))


def generalisation_error(W, v, Ws, vs, mask=None) -> jax.Array:
  """eps_g = 1/2 E[(phi(x) - phi*(x))^2] in closed form from Q, R and T."""
  v = v if mask is None else v * mask
  Q, R, T = order_parameters(W, Ws)
  q, t = jnp.diag(Q), jnp.diag(T)
  student = v @ _pair(Q, q, q) @ v
  teach = vs @ _pair(T, t, t) @ vs
  cross = v @ _pair(R, q, t) @ vs
  return 0.5 * (student + teach - 2 * cross)


def sgd_step(W, v, x, y, lr: float, mask, train_second: bool):
  """One online SGD step on 1/2 (phi(x) - y)^2 with the learning rates of Goldt et al.: eta / sqrt N
  for the first layer (so that O(N) steps move the order parameters by O(1)) and eta / N for the second."""
  N = W.shape[1]
  loss = lambda W, v: 0.5 * (committee(W, v, x, mask) - y) ** 2
  gW, gv = jax.grad(loss, argnums=(0, 1))(W, v)
  W = W - lr * gW  # gW = Delta v_k g'(lambda_k) x / sqrt N: the step is eta / sqrt N times Delta v_k g' x
  if train_second:
    v = v - lr / N * gv
  return W, v


@functools.partial(jax.jit, static_argnames=("steps", "record_every", "train_second"))
def _train(key, W0, v0, Ws, vs, mask, lr, noise, steps: int, record_every: int, train_second: bool):
  N = W0.shape[1]

  def step(carry, key):
    W, v = carry
    kx, kn = jax.random.split(key)
    x = jax.random.normal(kx, (N,))
    y = committee(Ws, vs, x) + noise * jax.random.normal(kn)
    return sgd_step(W, v, x, y, lr, mask, train_second), None

  def block(carry, key):
    carry, _ = jax.lax.scan(step, carry, jax.random.split(key, record_every))
    return carry, generalisation_error(*carry, Ws, vs, mask)

  (W, v), errors = jax.lax.scan(block, (W0, v0), jax.random.split(key, steps // record_every))
  return W, v, errors


def init_student(key, K_max: int, N: int, train_second: bool, init_std: float = 1.0):
  """W entries N(0, init_std^2); v = 1 (first layer only: the soft committee machine) or small
  N(0, 10^-2) (both layers trained)."""
  kw, kv = jax.random.split(key)
  W = init_std * jax.random.normal(kw, (K_max, N))
  v = jnp.ones(K_max) if not train_second else 0.1 * jax.random.normal(kv, (K_max,))
  return W, v


def train_students(
  key: jax.Array, Ws, vs, ks: Sequence[int], *, seeds: int, steps: int, lr: float, noise: float,
  train_second: bool, record_every: int = 100,
) -> dict:
  """Every K of `ks` times every seed, as one vmapped program of students padded to max(ks).
  Returns numpy arrays: "errors" (len(ks), seeds, steps // record_every) of eps_g after each block of
  `record_every` steps, "W" (len(ks), seeds, K_max, N), "v", "mask" (len(ks), K_max), and "time"
  (alpha = steps / N at each record)."""
  if steps % record_every:
    raise ValueError(f"steps ({steps}) must be a multiple of record_every ({record_every})")
  if min(ks) < 1:
    raise ValueError("every student needs at least one unit")
  K_max, N = max(ks), Ws.shape[1]
  mask = jnp.asarray([[1.0 if k < K else 0.0 for k in range(K_max)] for K in ks])
  keys = jax.random.split(key, (len(ks), seeds, 2))
  init = jax.vmap(jax.vmap(lambda k: init_student(k, K_max, N, train_second)))(keys[:, :, 0])
  run = lambda k, W0, v0, m: _train(k, W0, v0, Ws, vs, m, lr, noise, steps, record_every, train_second)
  per_seed = jax.vmap(run, in_axes=(0, 0, 0, None))
  W, v, errors = jax.vmap(per_seed)(keys[:, :, 1], init[0], init[1], mask)
  return {"errors": np.asarray(errors), "W": np.asarray(W), "v": np.asarray(v), "mask": np.asarray(mask),
          "time": (np.arange(1, steps // record_every + 1) * record_every / N).tolist()}


def match_units(R: np.ndarray, v: np.ndarray, mask: np.ndarray) -> dict:
  """The active student units ordered by the teacher unit they follow (largest |R_km|, R as given),
  then by their second-layer weight |v_k| descending: {"order": unit indices, "teacher": their teacher}."""
  active = np.nonzero(np.asarray(mask) > 0)[0]
  best = np.argmax(np.abs(np.asarray(R)[active]), axis=1)
  idx = np.lexsort((-np.abs(np.asarray(v)[active]), best))
  return {"order": active[idx].tolist(), "teacher": best[idx].tolist()}

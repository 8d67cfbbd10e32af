"""Teacher-student soft committee machines trained by online SGD (Goldt et al. 2019; DEFINITIONS.md section 5).

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
  results = run(TeacherStudentConfig())                         # python -m experiments.teacher_student

`run` trains every K and seed of both modes (first layer only, both layers) and tests the headline:
with output noise, the final error grows with K when only the first layer is trained, and stays flat
or falls with K when both layers are trained.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from redundancy_jax.core import config, storage
from redundancy_jax.core.config import option
from redundancy_jax.core.runs import folder_lock
from redundancy_jax.core.verdicts import RULE_ONLY, Verdict
from redundancy_jax.core.errors import BadOption


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
    raise BadOption(f"steps ({steps}) must be a multiple of record_every ({record_every})")
  if min(ks) < 1:
    raise BadOption("every student needs at least one unit")
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


# ----------------------------------------------------------------------------- the experiment

GROWS, FLAT = 1.5, 1.1  # "grows": eps(K_max) > 1.5 eps(K_min) and non-decreasing; "flat or falls": <= 1.1 eps(K_min)


@dataclasses.dataclass(frozen=True)
class TeacherStudentConfig:
  """`python -m experiments.teacher_student`; `--quick`: N = 100, alpha = 100, K in 2, 4, 8."""

  input_dim: int = option(500, "Input dimension N.", quick=100)
  teacher_units: int = option(2, "Teacher hidden units M.")
  student_units: tuple[int, ...] = option((2, 3, 4, 6, 8, 10), "Student widths K (each >= M).", quick=(2, 4, 8))
  noise: float = option(0.5, "Output noise sigma of the teacher's labels.")
  lr: float = option(0.5, "Learning rate eta (eta / sqrt N first layer, eta / N second).")
  time: float = option(100.0, "Training time alpha = steps / N.", quick=100.0)
  records: int = option(60, "Error records along the run.", quick=40)
  num_seeds: int = option(3, "Seeds per student width.")
  seed: int = option(0, "Seed of the teacher and the students.")
  workdir: str = option("runs/teacher_student", "Output folder.")

  def schedule(self) -> tuple[int, int]:
    """(steps, record_every): alpha N steps, cut to whole records; errors for impossible settings."""
    ks = self.student_units
    if self.teacher_units < 1 or not ks or min(ks) < self.teacher_units:
      raise BadOption(f"every student needs K >= M = {self.teacher_units} units (got "
                       f"--student_units={','.join(map(str, ks))})")
    steps = int(round(self.time * self.input_dim))
    record_every = max(1, steps // max(self.records, 1))
    steps = record_every * (steps // record_every)
    if steps < 1 or self.num_seeds < 1 or self.noise < 0 or self.lr <= 0:
      raise BadOption("--time, --num_seeds and --lr must be positive and --noise non-negative")
    return steps, record_every


def headline(modes: dict) -> Verdict:
  first, both = modes["first_layer"]["final_mean"], modes["both_layers"]["final_mean"]
  grows = first[-1] > GROWS * first[0] and all(b >= a for a, b in zip(first, first[1:]))
  flat = both[-1] <= FLAT * both[0]
  ks = modes["first_layer"]["ks"]
  return Verdict.decide(
    "with output noise, the final error grows with K when only the first layer is trained, and stays flat or "
    "falls with K when both layers are trained", grows and flat,
    f"K = {ks[0]} -> {ks[-1]}: first layer only {first[0]:.3f} -> {first[-1]:.3f}, both layers "
    f"{both[0]:.3f} -> {both[-1]:.3f}",
    rule=f"grows: eps(K_max) > {GROWS} eps(K_min) and non-decreasing in K; flat or falls: eps(K_max) <= "
         f"{FLAT} eps(K_min)", numbers={"first_layer_final": first, "both_layers_final": both},
    effect=first[-1] - first[0], control_spread=max(modes["first_layer"]["final_std"]), unit="eps_g", test=RULE_ONLY,
    measured_on=f"first layer only, K = {ks[-1]} minus K = {ks[0]}, means over seeds; control: the largest "
                "spread over seeds of one K")


def run(cfg: TeacherStudentConfig, log: Callable[[str], None] = print) -> dict:
  """Both training modes, every K and seed; writes results.json and figure.png/.pdf."""
  cfg = dataclasses.replace(cfg, student_units=tuple(sorted(set(cfg.student_units))))
  steps, record_every = cfg.schedule()
  key = jax.random.key(cfg.seed)
  Ws, vs = teacher(jax.random.fold_in(key, 0), cfg.teacher_units, cfg.input_dim)
  results = {"experiment": "teacher_student",
             "config": {**config.to_json(cfg), "steps": steps, "record_every": record_every,
                        "time": steps / cfg.input_dim},
             "modes": {}}
  with folder_lock(cfg.workdir):
    for i, mode in enumerate(("first_layer", "both_layers")):
      begin = time.time()
      out = train_students(jax.random.fold_in(key, i + 1), Ws, vs, cfg.student_units, seeds=cfg.num_seeds,
                           steps=steps, lr=cfg.lr, noise=cfg.noise, train_second=mode == "both_layers",
                           record_every=record_every)
      errors = out["errors"]  # (K, seeds, records)
      final = errors[:, :, -1]
      W, v, mask = out["W"][-1, 0], out["v"][-1, 0], out["mask"][-1]  # widest student, seed 0
      Q, R, T = (np.asarray(a, np.float64) for a in order_parameters(W, Ws))
      cosine = R / np.sqrt(np.outer(np.diag(Q), np.diag(T)))
      match = match_units(cosine, v, mask)
      results["time"] = out["time"]
      results["modes"][mode] = {
        "ks": list(cfg.student_units), "final_mean": final.mean(1).tolist(), "final_std": final.std(1).tolist(),
        "final": final.tolist(), "curve_mean": errors.mean(1).tolist(), "curve_std": errors.std(1).tolist(),
        "overlap": {"K": cfg.student_units[-1], "order": match["order"], "teacher": match["teacher"],
                    "cosine": cosine[match["order"]].tolist(), "v": v[match["order"]].tolist()},
        "seconds": time.time() - begin,
      }
      log(f"{mode}: final eps_g " + ", ".join(
        f"K={k} {m:.4f} +- {s:.4f}" for k, m, s in zip(cfg.student_units, final.mean(1), final.std(1)))
        + f" ({results['modes'][mode]['seconds']:.1f}s)")
    verdict = headline(results["modes"])
    results["headlines"] = [verdict.to_json()]
    results["settings"] = (f"N = {cfg.input_dim}, M = {cfg.teacher_units}, K = "
                           f"{', '.join(map(str, cfg.student_units))}, alpha = {steps / cfg.input_dim:g}, "
                           f"sigma = {cfg.noise:g}, {cfg.num_seeds} seeds")
    storage.write_json(os.path.join(cfg.workdir, "results.json"), results)
    from redundancy_jax.plots import save, teacher_student as plots  # matplotlib: only where a figure is drawn

    paths = save(plots.figure(results), os.path.join(cfg.workdir, "figure"))
  log(f"headline: {verdict.claim}: {verdict.verdict.upper()}")
  log(f"wrote {cfg.workdir}/results.json, {', '.join(os.path.basename(p) for p in paths)}")
  return results

"""Filter clustering (Brutzkus and Globerson 2019; DEFINITIONS.md section 5): their XORD network, trained for many
widths at once, and the clustering of normalised filters by k-means.

XORD: x is d pairs of values in {-1, 1}, positive iff some pair is (1, 1) or (-1, -1). The network: a
convolution of 2k filters of size 2 and stride 2 (one filter sees one pair), ReLU, max-pool over the d
positions, and a fixed readout (+1 for the first k channels, -1 for the last k); hinge loss, SGD.
Every k of a sweep runs in one program: filters are padded to the largest k and masked.

  x, y, w = xord_enumeration(4)                     # all 256 points, labels +-1, balanced weights
  out = train_xord(key, ks=[2, 8, 32], ...)         # every k x seed, vmapped
  angles, labels, centres = nearest_centre_angles(filters, 4, seed=0)
  results = run(ClusteringConfig())                 # python -m experiments.clustering

`run`: XORD networks for every k (trained on `n_train` points; test accuracy exact over the balanced
distribution), k-means angles trained against initialisation and compression by centres, then the same
for the first conv layer of a Conv-2 trained on real images. Headlines: the larger network generalises
better, and trained filters cluster.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from scipy.cluster import vq

from redundancy_jax.analyses.units import kernel_from_units, unit_directions, unit_matrix
from redundancy_jax.core import config, data, storage, train, variants
from redundancy_jax.models import topology
from redundancy_jax.core.config import TrainConfig, option
from redundancy_jax.core.runs import Run, folder_lock
from redundancy_jax.core.verdicts import RULE_ONLY, Verdict
from redundancy_jax.core.errors import BadOption


def xord_label(x: np.ndarray) -> np.ndarray:
  """+1 iff some pair (x_2i, x_2i+1) is (1, 1) or (-1, -1), else -1."""
  pairs = np.asarray(x).reshape(len(x), -1, 2)
  return np.where(np.any(pairs[..., 0] == pairs[..., 1], axis=1), 1, -1).astype(np.int32)


def xord_enumeration(pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every point of {-1, 1}^(2 d), its label, and the weight of each point under the balanced XORD
  distribution (both classes equally likely, uniform within a class): the exact test set."""
  x = np.asarray(list(itertools.product((-1.0, 1.0), repeat=2 * pairs)), np.float32)
  y = xord_label(x)
  weight = np.where(y > 0, 0.5 / np.sum(y > 0), 0.5 / np.sum(y < 0))
  return x, y, weight


def xord_net(W, x, mask):
  """Outputs of the XORD network with filters W (2 K, 2): channels [0, K) read +1, [K, 2 K) read -1,
  each multiplied by `mask` (2 K,) (0 for padding)."""
  K = W.shape[0] // 2
  patches = x.reshape(x.shape[0], -1, 2)  # (n, d, 2)
  pooled = jnp.max(jax.nn.relu(patches @ W.T), axis=1)  # (n, 2 K)
  readout = jnp.concatenate([jnp.ones(K), -jnp.ones(K)]) * mask
  return pooled @ readout


def channel_mask(k: int, K: int) -> np.ndarray:
  """The (2 K,) mask of a network with k filters per sign padded to K."""
  one = (np.arange(K) < k).astype(np.float32)
  return np.concatenate([one, one])


def hinge_loss(W, x, y, mask):
  return jnp.mean(jax.nn.relu(1.0 - y * xord_net(W, x, mask)))


@functools.partial(jax.jit, static_argnames=("steps", "batch"))
def _train(key, W0, mask, x, y, lr, steps: int, batch: int):
  def step(W, key):
    idx = jax.random.choice(key, x.shape[0], (batch,), replace=False)
    g = jax.grad(hinge_loss)(W, x[idx], y[idx], mask)
    return W - lr * g, None

  W, _ = jax.lax.scan(step, W0, jax.random.split(key, steps))
  return W


def train_xord(key, ks: Sequence[int], x, y, *, seeds: int, steps: int, lr: float, batch: int,
               init_std: float = 0.1) -> dict:
  """Every k of `ks` times every seed as one vmapped program of networks padded to max(ks) filters per
  sign. Returns numpy "W0" and "W" (len(ks), seeds, 2 K, 2) and "mask" (len(ks), 2 K)."""
  if min(ks) < 1:
    raise BadOption("every network needs at least one filter per sign")
  if not 1 <= batch <= len(y):
    raise BadOption(f"batch must lie in 1..{len(y)} (the training set), got {batch}")
  K = max(ks)
  mask = jnp.asarray(np.stack([channel_mask(k, K) for k in ks]))
  init_keys, train_keys = jax.random.split(key)
  W0 = init_std * jax.random.normal(init_keys, (len(ks), seeds, 2 * K, 2))
  keys = jax.random.split(train_keys, (len(ks), seeds))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  run = lambda k, w, m: _train(k, w, m, x, y, lr, steps, batch)
  W = jax.vmap(jax.vmap(run, in_axes=(0, 0, None)))(keys, W0, mask)
  return {"W0": np.asarray(W0), "W": np.asarray(W), "mask": np.asarray(mask)}


def accuracy(W, mask, x, y, weight=None) -> float:
  """(Weighted) fraction of points whose output sign is the label (an output of 0 counts as wrong)."""
  correct = np.asarray(jnp.sign(xord_net(jnp.asarray(W), jnp.asarray(x), jnp.asarray(mask))) == y, np.float64)
  return float(np.average(correct, weights=weight))


def nearest_centre_angles(filters, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """k-means (SciPy's `kmeans2`, k-means++ start) with `clusters` centres on the unit-normalised rows
  of `filters`; returns each filter's angle in degrees to its nearest (normalised) centre, its cluster
  label, and the normalised centres. Zero rows are left out of the fit and get angle NaN, label -1."""
  F = np.asarray(filters, np.float64)
  alive = np.linalg.norm(F, axis=1) > 0
  U = unit_directions(F)[alive]
  clusters = min(clusters, len(U))
  centres, _ = vq.kmeans2(U, clusters, minit="++", seed=seed)
  centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-30)
  cos = np.clip(U @ centres.T, -1.0, 1.0)
  angles, labels = np.full(len(F), np.nan), np.full(len(F), -1)
  labels[alive] = np.argmax(cos, axis=1)
  angles[alive] = np.degrees(np.arccos(cos.max(axis=1)))
  return angles, labels, centres


def compress(filters, labels, centres) -> np.ndarray:
  """Each filter replaced by its cluster's centre scaled to the filter's norm (zero rows stay zero)."""
  F = np.asarray(filters, np.float64)
  out = np.zeros_like(F)
  alive = labels >= 0
  out[alive] = centres[labels[alive]] * np.linalg.norm(F[alive], axis=1, keepdims=True)
  return out


# ----------------------------------------------------------------------------- the experiment

RISES = 0.6  # "generalises better with k": Spearman correlation of test accuracy with k at least this


@dataclasses.dataclass(frozen=True)
class ClusteringConfig:
  """`python -m experiments.clustering`; `--quick`: k up to 32, 3 seeds, 2,000 steps, a small Conv-2."""

  ks: tuple[int, ...] = option((2, 4, 8, 16, 32, 64, 120), "Filters per sign k (the network has 2k).", quick=(2, 8, 32))
  pairs: int = option(4, "XORD dimension d (inputs of 2d values).")
  n_train: int = option(40, "XORD training points.")
  steps: int = option(10_000, "SGD steps.", quick=2000)
  batch: int = option(10, "SGD batch size (at most --n_train).")
  lr: float = option(0.05, "SGD learning rate.")
  num_seeds: int = option(5, "Seeds per k.", quick=3)
  clusters: int = option(4, "k-means centres for the angle statistic.")
  centres: tuple[int, ...] = option((1, 2, 4, 8, 16, 32), "Numbers of centres in the compression check.")
  conv2_workdir: str = option("runs/clustering/conv2", "Trained Conv-2 (trained there first if absent).")
  conv2_dataset: str = option("fashion_mnist", "Data of a Conv-2 trained by this script.")
  conv2_steps: int = option(2000, "Steps of a Conv-2 trained by this script.", quick=300)
  conv2_width: float = option(1.0, "Width of a Conv-2 trained by this script.", quick=0.25)
  seed: int = option(0, "Seed of the data, the networks and k-means.")
  workdir: str = option("runs/clustering", "Output folder.")

  def check(self) -> "ClusteringConfig":
    """The config with ks and centres sorted and unique and the batch at most the training set."""
    if not self.ks or not self.centres or min(self.ks) < 1 or min(self.centres) < 1 or self.clusters < 1 \
        or self.pairs < 1 or self.n_train < 2:
      raise BadOption("--ks, --centres, --clusters and --pairs must be positive and --n_train at least 2")
    return dataclasses.replace(self, ks=tuple(sorted(set(self.ks))), centres=tuple(sorted(set(self.centres))),
                               batch=min(self.batch, self.n_train))

  def conv2_training(self) -> TrainConfig:
    return TrainConfig(model="conv2", dataset=self.conv2_dataset, steps=self.conv2_steps, width=self.conv2_width)


def _angles(filters_by_seed, clusters, seed) -> np.ndarray:
  return np.concatenate([nearest_centre_angles(F, clusters, seed=seed)[0] for F in filters_by_seed])


def _summary(angles) -> dict:
  a = np.asarray(angles)[~np.isnan(angles)]
  return {"median": float(np.median(a)), "mean": float(a.mean()), "quantiles": np.quantile(a, [0.1, 0.25, 0.75, 0.9]).tolist(),
          "histogram": np.histogram(a, bins=18, range=(0, 90))[0].tolist()}


def xord_part(cfg: ClusteringConfig, log=print) -> dict:
  """XORD networks of every k: test accuracy, angles to the nearest centre, compression by centres."""
  ds = data.xord(cfg.seed, pairs=cfg.pairs, n_train=cfg.n_train, n_val=0, n_test=0)
  x_train, y_train = ds.train_x.reshape(len(ds.train_y), -1), 2 * ds.train_y - 1
  x_all, y_all, weight = xord_enumeration(cfg.pairs)
  begin = time.time()
  out = train_xord(jax.random.key(cfg.seed), cfg.ks, x_train, y_train, seeds=cfg.num_seeds,
                              steps=cfg.steps, lr=cfg.lr, batch=cfg.batch)
  seconds = time.time() - begin
  rows = []
  for i, k in enumerate(cfg.ks):
    mask = out["mask"][i]
    active = mask > 0
    test = [accuracy(out["W"][i, s], mask, x_all, y_all, weight) for s in range(cfg.num_seeds)]
    train_acc = [accuracy(out["W"][i, s], mask, x_train, y_train) for s in range(cfg.num_seeds)]
    trained = [out["W"][i, s][active] for s in range(cfg.num_seeds)]
    initial = [out["W0"][i, s][active] for s in range(cfg.num_seeds)]
    initial_angles = [nearest_centre_angles(F, cfg.clusters, seed=cfg.seed)[0] for F in initial]
    row = {"k": k, "test_accuracy": test, "test_mean": float(np.mean(test)), "test_std": float(np.std(test)),
           "train_mean": float(np.mean(train_acc)),
           "angles_trained": _summary(_angles(trained, cfg.clusters, cfg.seed)),
           "angles_init": _summary(np.concatenate(initial_angles)),
           "init_median_by_seed": [float(np.nanmedian(a)) for a in initial_angles]}  # the clustering's control
    compressed = []  # seed 0: accuracy with each filter replaced by its centre, per number of centres
    for c in cfg.centres:
      _, labels, centres = nearest_centre_angles(trained[0], c, seed=cfg.seed)
      W = out["W"][i, 0].copy()
      W[active] = compress(trained[0], labels, centres)
      compressed.append(accuracy(W, mask, x_all, y_all, weight))
    row["compressed_accuracy"] = compressed
    rows.append(row)
    log(f"XORD k={k}: test accuracy {100 * row['test_mean']:.1f} +- {100 * row['test_std']:.1f}% (train "
        f"{100 * row['train_mean']:.1f}%), median angle to the nearest of {cfg.clusters} centres "
        f"{row['angles_init']['median']:.1f} -> {row['angles_trained']['median']:.1f} deg")
  return {"rows": rows, "seconds": seconds, "dataset": ds.describe()}


def conv2_part(cfg: ClusteringConfig, log=print) -> dict:
  """Clustering of Conv-2's first conv layer, trained on real images (replica 0)."""
  run_ = Run(cfg.conv2_workdir)
  with run_.lock():
    model, variables, ds, tc = train.find_or_train(run_, cfg.conv2_training(), log)
    W0 = np.asarray(unit_matrix(run_.snapshot(0), "conv1"), np.float64)
  W = np.asarray(unit_matrix(variables, "conv1"), np.float64)
  x, y = ds.test_x, ds.test_y
  base = variants.loss_and_accuracy(model, variables, x, y)[1]
  compressed = []
  for c in cfg.centres:
    _, labels, centres = nearest_centre_angles(W, c, seed=cfg.seed)
    kernel = kernel_from_units(
      compress(W, labels, centres).astype(np.float32), topology.kernel(variables, "conv1").shape)
    params = topology.replace(variables["params"], topology.kernel_path("conv1"), kernel)
    compressed.append(variants.loss_and_accuracy(model, {**variables, "params": params}, x, y)[1])
  result = {"workdir": run_.workdir, "training": tc.to_json(), "dataset": ds.describe(), "filters": int(len(W)),
            "accuracy": base, "compressed_accuracy": compressed,
            "angles_trained": _summary(nearest_centre_angles(W, cfg.clusters, seed=cfg.seed)[0]),
            "angles_init": _summary(nearest_centre_angles(W0, cfg.clusters, seed=cfg.seed)[0])}
  log(f"Conv-2 conv1 ({len(W)} filters, {data.label(result['dataset'])}): median angle to the nearest of "
      f"{cfg.clusters} centres {result['angles_init']['median']:.1f} -> {result['angles_trained']['median']:.1f} "
      f"deg; accuracy {100 * base:.2f}%, with {cfg.centres[-1]} centres {100 * compressed[-1]:.2f}%")
  return result


def headlines(xord: dict, conv2: dict) -> list[Verdict]:
  ks = [r["k"] for r in xord["rows"]]
  test = [r["test_mean"] for r in xord["rows"]]
  rho = float(stats.spearmanr(ks, test)[0]) if len(ks) > 2 else float("nan")
  widest = xord["rows"][-1]
  cluster = {name: (r["angles_init"]["median"], r["angles_trained"]["median"])
             for name, r in (("XORD (widest k)", widest), ("Conv-2 conv1", conv2))}
  claim = "the larger XORD network generalises better (test accuracy rises with k)"
  rule = f"Spearman correlation of test accuracy with k >= {RISES}, and the widest above the narrowest"
  numbers = {"k": ks, "test_accuracy": test, "spearman": rho}
  evidence = f"test accuracy {', '.join(f'{100 * t:.1f}%' for t in test)} for k = {', '.join(map(str, ks))} " \
             f"(Spearman {rho:.2f})"
  scale = dict(effect=100 * (test[-1] - test[0]), control_spread=100 * max(r["test_std"] for r in xord["rows"]),
               unit="points of accuracy", test=RULE_ONLY,
               measured_on=f"k = {ks[-1]} minus k = {ks[0]}, means over seeds; control: the largest spread over "
                           "seeds of one k")
  first = (Verdict.untestable(claim, "fewer than 3 k", rule=rule, numbers=numbers) if len(ks) < 3 else
           Verdict.decide(claim, rho >= RISES and test[-1] > test[0], evidence, rule=rule, numbers=numbers, **scale))
  initial = widest.get("init_median_by_seed")  # absent from results written before it was recorded
  second = Verdict.decide(
    "trained filters cluster: their median angle to the nearest k-means centre falls from initialisation",
    all(t < i for i, t in cluster.values()),
    "; ".join(f"{name}: {i:.1f} -> {t:.1f} deg" for name, (i, t) in cluster.items()),
    rule="the trained median below the initial one, for both", numbers={name: {"init": i, "trained": t}
                                                                        for name, (i, t) in cluster.items()},
    effect=widest["angles_init"]["median"] - widest["angles_trained"]["median"],
    control_spread=float(np.std(initial)) if initial else None, unit="degrees", test=RULE_ONLY,
    measured_on=f"XORD k = {widest['k']}, initial minus trained median (Conv-2 conv1, one network: in the numbers); "
                "control: the initial median's spread over seeds")
  return [first, second]


def run(cfg: ClusteringConfig, log: Callable[[str], None] = print) -> dict:
  """Both parts; writes results.json and figure.png/.pdf into the workdir."""
  cfg = cfg.check()
  with folder_lock(cfg.workdir):
    xord = xord_part(cfg, log)
    conv2 = conv2_part(cfg, log)
    verdicts = headlines(xord, conv2)
    results = {"experiment": "clustering", "config": config.to_json(cfg), "xord": xord, "conv2": conv2,
               "headlines": [v.to_json() for v in verdicts],
               "settings": f"XORD d = {cfg.pairs}, k = {', '.join(map(str, cfg.ks))}, {cfg.num_seeds} seeds, "
                           f"{cfg.steps:,} steps; Conv-2 {cfg.conv2_steps:,} steps at width {cfg.conv2_width:g}"}
    storage.write_json(os.path.join(cfg.workdir, "results.json"), results)
    from redundancy_jax.plots import clustering as plots, save  # matplotlib: only where a figure is drawn

    paths = save(plots.figure(results), os.path.join(cfg.workdir, "figure"))
  for v in verdicts:
    log(f"headline: {v.claim}: {v.verdict.upper()}")
  log(f"wrote {cfg.workdir}/results.json, {', '.join(os.path.basename(p) for p in paths)}")
  return results

"""The report's open question: class subsets, the masked classifier, the outlier count, the command."""

import ast
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import classes as script
from redundancy_jax.analyses import classes, spectral
from redundancy_jax.core import class_subsets, config, data, steps, storage
from redundancy_jax.core.config import TrainConfig

QUIET = dict(log=lambda s: None)


def _small_mnist(n_train=1200):
  full = data.load_bundled_mnist(0)
  return dataclasses.replace(full, train_x=full.train_x[:n_train], train_y=full.train_y[:n_train])


def test_class_subsets_and_labels_by_hand():
  counts = (2, 3, 5, 10)
  maps = data.class_subsets(7, counts, 10)
  ds = _small_mnist()
  for r, (row, c) in enumerate(zip(maps, counts)):
    chosen = [k for k in range(10) if row[k] >= 0]
    assert len(chosen) == c
    assert [int(row[k]) for k in chosen] == list(range(c))  # relabelled 0..C-1 in increasing class order
    # the subset is part of the seed: (seed, replica) draws it, the same every time
    again = np.sort(np.random.default_rng([7, r]).choice(10, c, replace=False)).tolist()
    assert chosen == again
  assert maps[3].tolist() == list(range(10))  # every class: labels unchanged
  with pytest.raises(ValueError, match=r"outside 2..10"):
    data.class_subsets(0, (11,), 10)

  cfg = TrainConfig(model="lenet", classes=counts, steps=10, batch_size=32, seed=7).resolve()
  assert cfg.num_seeds == 4
  setup = steps.make_setup(cfg, ds)
  pools = [[i for i, label in enumerate(ds.train_y.tolist()) if maps[r][label] >= 0] for r in range(4)]
  assert setup.n_train == min(len(p) for p in pools)  # an epoch: the smallest subset's size
  idx = np.asarray(steps.epoch_indices(setup, 3, jnp.asarray(ds.train_y)))  # (S, K, B)
  assert idx.shape == (setup.n_train // 32, 4, 32)
  for r in range(4):
    seen = idx[:, r].ravel().tolist()
    assert len(set(seen)) == len(seen) and set(seen) <= set(pools[r])  # no repeat, only the replica's classes
    labels = np.asarray(class_subsets.shared_labels(setup, jnp.asarray(ds.train_y)))[r]
    for i in seen[:50]:  # the label it trains with: the class's place in its sorted subset
      chosen = [k for k in range(10) if maps[r][k] >= 0]
      assert labels[i] == chosen.index(int(ds.train_y[i]))
  with pytest.raises(ValueError, match="one class count of at least 2 per replica"):
    TrainConfig(classes=(2, 3), num_seeds=3).resolve()


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_masked_ten_output_classifier_equals_a_c_output_one(weight_decay):
  """Replica trained with C=3 of 10 outputs masked == a plain 3-output LeNet from the same weights on the
  same batches (the recipe's optimizer, 25 steps); the 7 masked outputs never move, also with weight decay
  (which would shrink them: their updates are masked, DEFINITIONS.md section 6)."""
  ds = _small_mnist()
  cfg = TrainConfig(model="lenet", classes=(3,), steps=25, batch_size=32, weight_decay=weight_decay).resolve()
  masked = steps.make_setup(cfg, ds)
  C = 3
  plain_ds = dataclasses.replace(ds, num_classes=C)
  plain = steps.make_setup(dataclasses.replace(cfg, classes=None), plain_ds)
  state_m = steps.init_state(masked, ds.image_shape)
  init = jax.tree.map(np.asarray, state_m.params)
  cut = classes.sliced(init, "fc3", C)
  state_p = steps.init_state(plain, ds.image_shape)
  state_p = steps.place_state(state_p.replace(params=jax.tree.map(jnp.asarray, cut),
                                              opt_state=jax.vmap(plain.tx.init)(jax.tree.map(jnp.asarray, cut))),
                              plain.mesh)
  row = np.asarray(masked.label_maps[0])
  train_m = (jnp.asarray(ds.train_x), jnp.asarray(ds.train_y))
  train_p = (jnp.asarray(ds.train_x), jnp.asarray(np.maximum(row[ds.train_y], 0)))  # left-out rows never drawn
  idx = steps.epoch_indices(masked, 0, train_m[1])
  step = jax.jit(steps.train_step, static_argnames="setup")
  for t in range(25):
    state_m, (loss_m, _) = step(masked, state_m, idx[t], train_m)
    state_p, (loss_p, _) = step(plain, state_p, idx[t], train_p)
    np.testing.assert_allclose(loss_m, loss_p, rtol=1e-5)
  pm, pp = jax.tree.map(np.asarray, state_m.params), jax.tree.map(np.asarray, state_p.params)
  for layer in ("fc1", "fc2"):
    np.testing.assert_allclose(pm[layer]["kernel"], pp[layer]["kernel"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(pm["fc3"]["kernel"][..., :C], pp["fc3"]["kernel"], rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(pm["fc3"]["kernel"][..., C:], init["fc3"]["kernel"][..., C:])
  np.testing.assert_array_equal(pm["fc3"]["bias"][..., C:], 0.0)
  # and the masked evaluation is the plain network's on the replica's test images
  x, y = classes.subset_split(ds.test_x, ds.test_y, row)
  assert len(y) == int(np.isin(ds.test_y, np.flatnonzero(row >= 0)).sum())
  original = ds.test_y[np.isin(ds.test_y, np.flatnonzero(row >= 0))]
  split_m = steps.device_data(masked, dataclasses.replace(ds, test_x=x, test_y=original))[2]
  split_p = steps.device_data(plain, dataclasses.replace(plain_ds, test_x=x, test_y=y))[2]
  acc_m = steps.evaluate(masked, state_m.params, state_m.batch_stats, split_m)[1]
  acc_p = steps.evaluate(plain, state_p.params, state_p.batch_stats, split_p)[1]
  np.testing.assert_allclose(acc_m, acc_p)


@pytest.mark.parametrize("r", [1, 4, 10])
def test_planted_rank_r_signal_gives_r_outliers(r):
  """LeNet fc1's shape: Glorot noise plus r directions whose eigenvalues sit at 2..4 lambda+ (the BBP
  threshold is far below): exactly r eigenvalues above the fitted lambda+ and the Tracy-Widom margin."""
  m, n = 300, 784
  rng = np.random.default_rng(r)
  var = 2 / (m + n)
  W = rng.normal(0, np.sqrt(var), (m, n))
  lam_plus = var * (np.sqrt(m) + np.sqrt(n)) ** 2
  u, _ = np.linalg.qr(rng.standard_normal((m, r)))
  v, _ = np.linalg.qr(rng.standard_normal((n, r)))
  W = W + (u * np.sqrt(np.linspace(2, 4, r) * lam_plus)) @ v.T
  fit = spectral.fit_marchenko_pastur(spectral.esd(W), m=m, n=n)
  assert int(fit.spikes) == r and int(fit.spikes_tw) == r


def test_the_analysis_does_not_import_its_figure_module():
  """analyses/classes.py imports no figure module, not even inside a function (plots/classes.py reads
  the analysis, not the other way round)."""
  tree = ast.parse(open(classes.__file__).read())
  imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
  imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
  assert "redundancy_jax.analyses.spectral" in imported  # the walk sees the module's imports
  assert not [m for m in imported if m and m.startswith("redundancy_jax.plots")], imported


@pytest.mark.e2e
def test_classes_command_end_to_end(tmp_path, capsys):
  cfg = config.preset(classes.ClassesConfig(), "quick")
  cfg = dataclasses.replace(cfg, counts=(2, 3, 4), seeds_per_count=2, workdir=str(tmp_path / "run"),
                            max_examples=None, layer=("fc1", "fc3"), train=dataclasses.replace(cfg.train, steps=120))
  results = script.main(cfg)  # the command: the analysis, then its figure
  assert [r["C"] for r in results["replicas"]] == [2, 2, 3, 3, 4, 4]
  for r in results["replicas"]:
    fc3 = r["layers"]["fc3"]
    assert (fc3["m"], fc3["n"]) == (r["C"], 100)  # the classifier as the C-output network it is
    # the plain C-output network's accuracy on all the replica's test images == the masked one's in training
    assert r["layers"]["fc1"]["a"] == pytest.approx(r["test_accuracy"], abs=1e-6)
    assert r["examples"] == int(np.isin(data.load_bundled_mnist(0).test_y, r["classes"]).sum())
    # rank >= min(m, n) keeps W whole: the unchanged accuracy
    assert fc3["low_rank"]["C"] == fc3["a"] and fc3["project_update"]["2C"] == fc3["a"]
    assert "no bulk to fit" in fc3["not_applicable"] and "not_applicable" not in r["layers"]["fc1"]
  # fc3's rows: not applicable, with the reason, in the summary and the table
  assert all("not_applicable" in row and "spikes" not in row for row in results["summary"]["fc3"])
  header, body = classes.table_lines(results["summary"]["fc3"])
  assert all(cells[2].startswith("not applicable: ") and len(cells) == len(header) for cells in body)
  rows = results["summary"]["fc1"]
  assert [row["C"] for row in rows] == [2, 3, 4] and all(row["seeds"] == 2 for row in rows)
  spikes = [r["layers"]["fc1"]["spikes"] for r in results["replicas"] if r["C"] == 3]
  assert rows[1]["spikes"] == pytest.approx([np.mean(spikes), np.std(spikes)])
  verdicts = results["headlines"]
  assert len(verdicts) == 9 and all(v["effect"] is not None for v in verdicts if v["verdict"] != "not testable")
  out = tmp_path / "run" / "classes"
  assert {"results.json", "table.md", "figure.png", "figure.pdf"} <= set(os.listdir(out))
  assert f"wrote {out}/figure.png, {out}/figure.pdf" in capsys.readouterr().out
  assert "| 3 | 2 |" in (out / "table.md").read_text()
  assert storage.read_json(str(out / "results.json"))["training"]["classes"] == [2, 2, 3, 3, 4, 4]
  # a rerun reuses the trained replicas; another --counts is refused before anything trains
  with pytest.raises(ValueError, match="--classes"):
    classes.run(dataclasses.replace(cfg, counts=(2, 5)), **QUIET)


def test_open_question_verdicts_state_unit_layer_and_test_by_hand():
  """Counts at C = 2, 3, 4 (one replica each) worked out here: slope 2 per class against 0 at
  initialisation; the elbow's largest distance from C is |3 - 2| = 1 (within 1: holds if it moved)."""
  def replica(C, spikes, elbow):
    stats = {"spikes": spikes, "spikes_tw": spikes, "elbow": elbow, "update_elbow": elbow}
    return {"C": C, "layers": {"fc1": {**stats, "init": {"spikes": 0, "spikes_tw": 0, "elbow": 40},
                                       "null": {"elbow": [40.0, 1.0], "update_elbow": [40.0, 1.0]}}}}
  replicas = [replica(2, 1, 3), replica(3, 3, 3), replica(4, 5, 4)]
  rows = [{"C": C, "a": [90.0, spread], "low_rank": {"C": [lost, 0.1]}, "project_update": {"C": [2 * lost, 0.1]}}
          for C, spread, lost in ((2, 0.5, 0.25), (3, 0.25, 0.75), (4, 0.5, 0.5))]
  found = {v.claim: v for v in classes.verdicts(replicas, {"fc1": rows}, "fc1")}
  grows = found["fc1: the outliers above λ+ grow with the number of classes"]
  # a perfect line: slope 2, zero residuals (standard error floored at 1e-3)
  assert grows.verdict == "holds" and grows.effect == pytest.approx(2.0)
  assert (grows.unit, grows.measured_on, grows.test) == ("outliers per class", "fc1", "above")
  assert not any(claim.startswith("fc1: elbow k of W =") for claim in found)  # sits at its null: reported only
  elbow = found["fc1: elbow k of the update W − W0 = C (within 1, every C)"]
  assert elbow.effect == pytest.approx(1.0) and (elbow.test, elbow.tolerance, elbow.unit) == ("within", 1.0, "ranks")
  assert elbow.numbers["movement"] == pytest.approx(np.mean([3 - 40, 3 - 40, 4 - 40]))
  assert elbow.verdict == "holds"  # within 1, and 36.7 below its null's 40 (control spread floored at 1/3)
  spikes = found["fc1: outliers above the fitted λ+ = C (within 1, every C)"]
  assert spikes.effect == pytest.approx(1.0) and spikes.unit == "eigenvalues"  # |1 - 2| = |5 - 4| = 1
  minus_one = found["fc1: outliers above the fitted λ+ = C − 1 (within 1, every C)"]
  assert minus_one.effect == pytest.approx(2.0) and minus_one.verdict == "does not hold"  # |5 - 3| = 2
  keeps = found["fc1: rank C (W_C) keeps the test accuracy within 1 point (every C)"]
  assert (keeps.verdict, keeps.effect, keeps.control_spread) == ("holds", 0.75, 0.5)  # the largest loss and spread
  assert (keeps.unit, keeps.test, keeps.tolerance) == ("points of accuracy", "within", 1.0)
  projected = found["fc1: rank C (W0 + P_C(W − W0)) keeps the test accuracy within 1 point (every C)"]
  assert (projected.verdict, projected.effect) == ("does not hold", 1.5)


def test_the_kept_step_as_a_covariate_by_hand():
  """Counts planted on the kept step alone (the step rising with C, not exactly): the slope on C falls to 0
  once the step is a regressor; counts planted on C alone keep their slope. The controlled slope and its
  standard error against Frisch-Waugh-Lovell: regress C and the counts on the step, then the residuals."""
  C = np.array([2, 2, 2, 5, 5, 5, 10, 10, 10], float)
  step = np.array([1000, 3000, 1500, 4000, 6000, 2000, 9000, 7000, 12000], float)
  on_step = 0.001 * step  # no effect of C at all
  slope, se, with_step = classes.slope_with_covariate(C, on_step, step)
  assert with_step and slope == pytest.approx(0.0, abs=1e-9) and np.polyfit(C, on_step, 1)[0] > 0.5
  noise = np.array([0.3, -0.2, 0.1, -0.4, 0.2, 0.1, 0.0, -0.1, 0.3])
  counts = 1.0 * C + 0.0002 * step + noise
  slope, se, _ = classes.slope_with_covariate(C, counts, step)
  resid = lambda v: v - np.polyval(np.polyfit(step, v, 1), step)
  rc, ry = resid(C), resid(counts)
  fwl = np.sum(rc * ry) / np.sum(rc**2)
  full = np.stack([np.ones(9), C, step], 1)
  sigma2 = np.sum((counts - full @ np.linalg.lstsq(full, counts, rcond=None)[0]) ** 2) / (9 - 3)
  assert slope == pytest.approx(fwl, rel=1e-9) and se == pytest.approx(np.sqrt(sigma2 / np.sum(rc**2)), rel=1e-9)
  # the verdict: counts that follow the step alone do not grow with C once the step is controlled
  replicas = [{"C": int(c), "best_step": int(t), "layers": {"fc1": {"spikes": float(k), "init": {"spikes": 0}}}}
              for c, t, k in zip(C, step, on_step + noise)]
  grows = classes._grows(replicas, "fc1")
  assert grows.verdict == "does not hold" and grows.numbers["step_covariate"]
  assert grows.numbers["slope_without_step"] > 0.5 and abs(grows.numbers["slope"]) < 3 * grows.control_spread


def test_null_elbow_against_a_chord_rule_written_here():
  """The null elbow: random matrices' elbows by an SVD and the chord rule written here; for a 300 x 784
  layer it sits far above any class count, so W's elbow cannot reach C (issue 28)."""
  rng = np.random.default_rng(0)
  ks = []
  for _ in range(classes.NULL_DRAWS):
    s2 = np.linalg.svd(rng.normal(0.0, np.sqrt(0.01), (60, 150)).astype(np.float32), compute_uv=False) ** 2
    r = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]]) / s2.sum()  # r[k] = sum_{i>k} s_i^2 / sum s^2
    p = 60
    k = np.arange(1, p)
    chord = r[1] + (r[p - 1] - r[1]) * (k - 1) / (p - 2)
    ks.append(int(k[np.argmax(chord - r[1:p])]))
  assert classes.null_elbow((60, 150), 0.01, seed=0) == pytest.approx([np.mean(ks), np.std(ks)])
  assert classes.null_elbow((300, 784), 0.002, draws=2)[0] > 100


def test_update_elbow_finds_a_planted_rank_C_update_and_its_null_does_not():
  """Updates W - W0 planted with rank C (C strong directions over Gaussian noise) give an update elbow of C,
  far from the null's (random matrices of the update's shape and variance), so "elbow of the update = C"
  holds; updates of noise alone give the null's elbow and the claim fails."""
  rng = np.random.default_rng(0)
  m, n, noise = 100, 200, 0.01

  def replica(C, planted):
    W0 = rng.normal(0.0, 0.05, (m, n)).astype(np.float32)
    update = rng.normal(0.0, noise, (m, n))
    if planted:
      u, _ = np.linalg.qr(rng.normal(size=(m, C)))
      v, _ = np.linalg.qr(rng.normal(size=(n, C)))
      update += u @ np.diag(np.linspace(3.0, 2.0, C)) @ v.T  # singular values 10-20x the noise's edge (0.17)
    W = W0 + update.astype(np.float32)
    d = W - W0
    layer = {"update_elbow": int(spectral.elbow(spectral.residuals(d))),
             "null": {"update_elbow": classes.null_elbow((m, n), float(np.var(d)), seed=1)}}
    return {"C": C, "layers": {"fc1": layer}}

  planted = [replica(C, True) for C in (2, 5, 10) for _ in range(2)]
  assert [r["layers"]["fc1"]["update_elbow"] for r in planted] == [2, 2, 5, 5, 10, 10]
  assert min(r["layers"]["fc1"]["null"]["update_elbow"][0] for r in planted) > 25  # the null sits far above C
  claim = classes._equals(planted, "fc1", "update_elbow", 0)
  assert claim.verdict == "holds" and claim.effect == 0.0 and "trained − null" in claim.evidence
  noise_only = [replica(C, False) for C in (2, 5, 10) for _ in range(2)]
  ks = [r["layers"]["fc1"]["update_elbow"] for r in noise_only]
  nulls = [r["layers"]["fc1"]["null"]["update_elbow"][0] for r in noise_only]
  assert max(abs(k - k0) for k, k0 in zip(ks, nulls)) < 8  # noise is its own null
  assert classes._equals(noise_only, "fc1", "update_elbow", 0).verdict == "does not hold"

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import LENET_STEPS, python
from redundancy_jax.core import config, data, epochs, optim, steps, storage, train
from redundancy_jax.core.runs import ConfigMismatch, Run

QUIET = dict(log=lambda s: None)


def _small_mnist(n_train=640, seed=0):
  full = data.load_bundled_mnist(seed)
  return data.Dataset(
    "mnist", full.source, full.train_x[:n_train], full.train_y[:n_train], full.val_x[:200], full.val_y[:200],
    full.test_x[:200], full.test_y[:200], 10, full.mean, full.std,
  )


def test_default_lenet_recipe_reaches_94_percent_on_bundled_data(trained_lenet):
  workdir, results = trained_lenet
  assert results["config"]["steps"] == LENET_STEPS and results["config"]["batch_size"] == 64
  assert results["config"]["optimizer"] == "momentum" and results["config"]["learning_rate"] == 3e-3
  # the minimum lies well inside these first steps of the 50,000-step recipe, so it is the recipe's model
  assert results["best_step"][0] <= LENET_STEPS - 500
  assert results["dataset"]["source"].startswith("bundled MNIST test set")
  # measured 94.8% (seed 0) and 95.4% (seed 1) with 8,000 training images; the report's 95% holds for
  # some seeds only (open gap, see BUILD_NOTES.md)
  assert results["test_accuracy"][0] >= 0.94
  # the kept model is the one at minimum validation loss, at an evaluation step
  assert results["best_step"][0] % 100 == 0
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  all_evals = [v for line in lines for _, v in line["val_loss"]]
  assert min(e[0] for e in all_evals) == pytest.approx(results["best_val_loss"][0], rel=1e-6)
  assert Run(workdir).snapshot_epochs()[0] == 0  # the initialisation is kept
  variables = Run(workdir).trained_variables()
  assert variables["params"]["fc1"]["kernel"].shape == (784, 300)


@pytest.mark.parametrize(
  "model, width, shape",
  [("lenet", 1.0, (28, 28, 1)), ("conv2", 0.25, (16, 16, 3)), ("conv4", 0.25, (16, 16, 3)),
   ("conv6", 0.25, (16, 16, 3)),
   # VGG19's run, the longest to compile, in the end-to-end tier (where the quick reproduction trains it too)
   pytest.param("vgg19", 0.125, (32, 32, 3), marks=pytest.mark.e2e)],
)
def test_every_model_learns_generated_data(tmp_path, model, width, shape):
  ds = data.random_images(seed=0, shape=shape, n_train=1024, n_val=128, n_test=128)
  cfg = config.TrainConfig(model=model, dataset="random_images", steps=200, batch_size=32, width=width, eval_every=50)
  if model == "vgg19":
    cfg = config.TrainConfig(**{**cfg.__dict__, "learning_rate": 0.01, "augment": False})
  train.train(cfg, str(tmp_path), dataset=ds, **QUIET)
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  losses = [l["train_loss"][0] for l in lines]
  assert losses[-1] < 0.5 * losses[0], losses


def test_resume_matches_uninterrupted_run(tmp_path):
  ds = _small_mnist()
  cfg = config.TrainConfig(model="lenet", steps=120, batch_size=32, eval_every=25)  # 20 steps/epoch
  full = train.train(cfg, str(tmp_path / "a"), dataset=ds, checkpoint_every_secs=0, **QUIET)
  stopped = train.train(cfg, str(tmp_path / "b"), dataset=ds, checkpoint_every_secs=0, max_epochs=3, **QUIET)
  assert stopped == {"stopped_at_epoch": 3}
  resumed = train.train(cfg, str(tmp_path / "b"), dataset=ds, checkpoint_every_secs=0, **QUIET)
  for key in ("best_step", "best_val_loss", "test_accuracy"):
    assert resumed[key] == full[key]
  a = storage.load_tree(Run(str(tmp_path / "a")).trained_path)
  b = storage.load_tree(Run(str(tmp_path / "b")).trained_path)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  epochs = [json.loads(l)["epoch"] for l in open(tmp_path / "b" / "metrics.jsonl")]
  assert epochs == list(range(1, 7))


def test_stop_by_max_epochs_checkpoints_with_the_default_interval(tmp_path):
  ds = _small_mnist(n_train=160)
  cfg = config.TrainConfig(model="lenet", steps=30, batch_size=16, eval_every=5)  # 10 steps/epoch, 3 epochs
  full = train.train(cfg, str(tmp_path / "a"), dataset=ds, **QUIET)
  stopped = train.train(cfg, str(tmp_path / "b"), dataset=ds, max_epochs=2, **QUIET)  # default 60 s interval
  assert stopped == {"stopped_at_epoch": 2}
  assert Run(str(tmp_path / "b")).checkpoints().latest_step() == 20  # 2 epochs x 160 // 16 steps
  logged = []
  resumed = train.train(cfg, str(tmp_path / "b"), dataset=ds, log=logged.append)
  assert any(line.startswith("resuming from step 20 ") for line in logged), logged
  for key in ("best_step", "best_val_loss", "test_accuracy", "test_loss"):
    assert resumed[key] == full[key], key
  a = storage.load_tree(Run(str(tmp_path / "a")).trained_path)
  b = storage.load_tree(Run(str(tmp_path / "b")).trained_path)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_learning_rate_drops_tenfold_at_the_given_fractions(optimizer):
  lr, g = 0.5, 2.0
  cfg = config.TrainConfig(model="lenet", optimizer=optimizer, learning_rate=lr, lr_drops=(0.5, 0.75), steps=8)
  tx = optim.make_optimizer(cfg.resolve())
  p, updates = jnp.float32(1.0), []
  opt_state = tx.init(p)
  for _ in range(8):
    u, opt_state = tx.update(jnp.float32(g), opt_state, p)
    p = p + u
    updates.append(float(u))
  lrs = [lr] * 4 + [lr / 10] * 2 + [lr / 100] * 2  # drops after 8 * 0.5 and 8 * 0.75 steps
  # momentum 0.9 (heavy ball) on a constant gradient: velocity g * (1 + 0.9 + ... + 0.9**t)
  velocity = [g] * 8 if optimizer == "sgd" else [g * (1 - 0.9 ** (t + 1)) / 0.1 for t in range(8)]
  np.testing.assert_allclose(updates, [-a * v for a, v in zip(lrs, velocity)], rtol=1e-6)


def test_vgg19_recipe_drops_the_learning_rate_at_half_and_three_quarters_of_112k_steps():
  tx = optim.make_optimizer(config.TrainConfig(model="vgg19").resolve())
  p = jnp.float32(0.0)  # no weight decay term; a fresh momentum trace: the update is -lr * gradient
  for count, lr in [(0, 0.1), (55_999, 0.1), (56_000, 0.01), (83_999, 0.01), (84_000, 0.001), (111_999, 0.001)]:
    opt_state = optax.tree_utils.tree_set(tx.init(p), count=jnp.int32(count))
    np.testing.assert_allclose(float(tx.update(jnp.float32(1.0), opt_state, p)[0]), -lr, rtol=1e-6)


@pytest.mark.parametrize(
  "cfg, expected",
  [
    # lr * w = 0.1 * 0.01: p -> p * (1 - 1e-3)
    (config.TrainConfig(model="lenet", optimizer="sgd", learning_rate=0.1, weight_decay=0.01),
     {"a": [0.999, -1.998, 3.996], "b": 2.997}),
    # VGG-19's recipe, lr 0.1 and decay 1e-4 (momentum's first step is plain SGD): p -> p * (1 - 1e-5)
    (config.TrainConfig(model="vgg19"), {"a": [0.99999, -1.99998, 3.99996], "b": 2.99997}),
    # LeNet's recipe has no weight decay: a zero gradient leaves p alone
    (config.TrainConfig(model="lenet"), {"a": [1.0, -2.0, 4.0], "b": 3.0}),
  ],
)
def test_weight_decay_shrinks_parameters_by_lr_times_decay(cfg, expected):
  tx = optim.make_optimizer(cfg.resolve())
  params = {"a": jnp.array([1.0, -2.0, 4.0]), "b": jnp.float32(3.0)}
  zero = jax.tree.map(jnp.zeros_like, params)
  new = optax.apply_updates(params, tx.update(zero, tx.init(params), params)[0])
  jax.tree.map(lambda n, e: np.testing.assert_allclose(n, e, rtol=1e-7), new, expected)


def test_jitted_step_equals_eager_step():
  # Conv-2 with BatchNorm (running statistics), weight decay and momentum; augmentation is left out
  # only to keep the eager run short (the augmented step is checked against a hand-written one above)
  ds = data.random_images(seed=0, shape=(16, 16, 3), n_train=16, n_val=8, n_test=8)
  cfg = config.TrainConfig(
    model="conv2", dataset="random_images", steps=8, batch_size=8, width=0.25, batch_norm=True,
    optimizer="momentum", learning_rate=0.05, weight_decay=1e-3,
  )
  setup = steps.make_setup(cfg.resolve(), ds)
  train_data = steps.device_data(setup, ds)[0]
  state = steps.init_state(setup, ds.image_shape)
  idx = jnp.array([[5, 0, 3, 9, 12, 1, 7, 2]])
  jitted, jitted_metrics = jax.jit(steps.train_step, static_argnames="setup")(setup, state, idx, train_data)
  with jax.disable_jit():
    eager, eager_metrics = steps.train_step(setup, state, idx, train_data)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(eager.params), jax.tree.leaves(state.params)))
  assert moved > 1e-3  # the step really changes the parameters, far beyond the tolerance below
  for a, b in zip(jax.tree.leaves((eager, eager_metrics)), jax.tree.leaves((jitted, jitted_metrics))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scan_epoch_equals_host_loop_epoch():
  ds = _small_mnist(n_train=160)
  # 10 steps/epoch, 2 replicas; validations at steps 5, 10 (inside and at the end of epoch 1) and 15
  cfg = config.TrainConfig(model="lenet", steps=15, batch_size=16, eval_every=5, num_seeds=2).resolve()
  setup = steps.make_setup(cfg, ds)
  train_data, val_split, _ = steps.device_data(setup, ds)
  runs = {}
  for loop in ("scan", "python"):
    state, metrics = steps.init_state(setup, ds.image_shape), []  # a fresh state: the step donates it
    for _ in range(2):
      state, m, _ = epochs.run_epoch(setup, state, train_data, val_split, loop=loop)
      metrics.append(jax.device_get(m))
    runs[loop] = jax.device_get(state), {k: np.concatenate([m[k] for m in metrics]) for k in metrics[0]}
  (scan, scan_m), (host, host_m) = runs["scan"], runs["python"]
  active = np.arange(20) < 15
  for m in (scan_m, host_m):
    np.testing.assert_array_equal(m["active"], active)
    evaluated = ~np.isnan(m["val_loss"][active]).any(1)
    np.testing.assert_array_equal(np.flatnonzero(evaluated) + 1, [5, 10, 15])
  for key in ("loss", "accuracy", "val_loss"):  # inactive steps carry filler values
    np.testing.assert_allclose(scan_m[key][active], host_m[key][active], rtol=1e-5, atol=1e-6)
  assert int(scan.step) == int(host.step) == 15 and int(scan.epoch) == int(host.epoch) == 2
  np.testing.assert_array_equal(scan.best_step, host.best_step)
  for a, b in zip(jax.tree.leaves(scan), jax.tree.leaves(host)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # independently: the best step is the argmin of the logged validations, and the last validation is
  # the mean cross-entropy of the final parameters on the validation split
  vals = scan_m["val_loss"][[4, 9, 14]]
  np.testing.assert_array_equal(scan.best_step, 5 * (vals.argmin(0) + 1))
  np.testing.assert_allclose(scan.best_loss, vals.min(0), rtol=1e-6)
  for k in range(2):
    params_k = jax.tree.map(lambda a, k=k: a[k], scan.params)
    logits = setup.model.apply({"params": params_k}, ds.val_x)
    ce = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), ds.val_y[:, None].astype(int), 1).mean()
    np.testing.assert_allclose(vals[2, k], ce, rtol=1e-5)


def test_with_onednn_a_conv_net_trains_in_a_scan_equal_to_the_python_loop(monkeypatch):
  """`REDUNDANCY_JAX_CONV=onednn`: the step's convolutions are FFI calls, so a conv net's epoch runs as one
  scan (`epochs.epoch_form`), and it computes what the Python-stepped epoch does (the same compiled step)."""
  from redundancy_jax.models import onednn

  if onednn.unavailable():  # .ci/run installs oneDNN and a compiler; a machine without them says so here
    pytest.skip(onednn.unavailable())
  ds = _small_mnist(n_train=48)
  cfg = config.TrainConfig(model="conv2", width=0.125, steps=6, batch_size=8, eval_every=3, num_seeds=2).resolve()
  setup = steps.make_setup(cfg, ds)
  assert setup.host_loop and epochs.epoch_form(setup) == "python loop"
  monkeypatch.setenv("REDUNDANCY_JAX_CONV", "onednn")
  assert epochs.epoch_form(setup) == "lax.scan"
  train_data, val_split, _ = steps.device_data(setup, ds)
  runs = {}
  for loop in ("auto", "python"):
    state = steps.init_state(setup, ds.image_shape)
    runs[loop] = jax.device_get(epochs.run_epoch(setup, state, train_data, val_split, loop=loop)[:2])
  (scan, scan_m), (host, host_m) = runs["auto"], runs["python"]
  assert np.isfinite(scan_m["val_loss"][[2, 5]]).all() and int(scan.step) == 6
  start = jax.device_get(steps.init_state(setup, ds.image_shape).params)
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(scan.params), jax.tree.leaves(start))) > 1e-3
  for a, b in zip(jax.tree.leaves((scan, scan_m)), jax.tree.leaves((host, host_m))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_num_seeds_trains_independent_replicas(tmp_path):
  ds = _small_mnist()
  cfg = config.TrainConfig(model="lenet", steps=40, batch_size=32, eval_every=20, num_seeds=3)
  results = train.train(cfg, str(tmp_path), dataset=ds, **QUIET)
  assert len(results["test_accuracy"]) == 3
  kernels = storage.load_tree(Run(str(tmp_path)).trained_path)["params"]["fc1"]["kernel"]
  assert kernels.shape == (3, 784, 300)
  assert not np.allclose(kernels[0], kernels[1])


MULTI_DEVICE = r"""
import os, sys, json
import jax, numpy as np
from redundancy_jax.core import config, data, storage, train
from redundancy_jax.core.runs import ConfigMismatch, Run
assert jax.device_count() == 4, jax.devices()
# several evaluation chunks of 500: host-stepped programs with collectives, which XLA:CPU must run one
# at a time on several devices (`parallel.one_at_a_time`)
ds = data.load_bundled_mnist(0)
out = {}
for n in (1, 4):
  cfg = config.TrainConfig(model="conv2", dataset="mnist", steps=30, batch_size=32, eval_every=10, num_devices=n, width=0.25)
  wd = os.path.join(sys.argv[1], str(n))
  r = train.train(cfg, wd, dataset=ds, log=lambda s: None)
  out[n] = (r, storage.load_tree(Run(wd).trained_path))
for a, b in zip(jax.tree.leaves(out[1][1]), jax.tree.leaves(out[4][1])):
  np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
assert out[1][0]["best_step"] == out[4][0]["best_step"]
print("devices", out[4][0]["devices"], "max diff", max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(out[1][1]), jax.tree.leaves(out[4][1]))))

# 4 LeNet seeds on 2 CPU devices, stepped in 2 waves of one replica per device (`epochs.waves_epoch`), give
# bit for bit what 4 devices of one replica each give in one program: parameters, optimizer state, the
# minimum-loss copies and every per-step metric, over 3 epochs with validations inside them and an end mid-epoch
import dataclasses
from redundancy_jax.core import epochs, steps
small = dataclasses.replace(ds, train_x=ds.train_x[:600], train_y=ds.train_y[:600])
runs = {}
for n in (4, 2):
  cfg = config.TrainConfig(model="lenet", dataset="mnist", steps=45, batch_size=32, eval_every=10, num_seeds=4,
                           num_devices=n).resolve()
  setup = steps.make_setup(cfg, small)
  assert epochs.waves(setup) == {4: 1, 2: 2}[n], (n, epochs.waves(setup))
  train_data, val_split, _ = steps.device_data(setup, small)
  state, metrics = steps.init_state(setup, small.image_shape), []
  for _ in range(3):
    state, m, done = epochs.run_epoch(setup, state, train_data, val_split)
    metrics.append(m)
  runs[n] = jax.device_get((state, metrics))
assert int(runs[2][0].step) == 45 and int(runs[2][0].epoch) == 3
for a, b in zip(jax.tree.leaves(runs[4]), jax.tree.leaves(runs[2])):
  assert np.shape(a) == np.shape(b) and np.array_equal(a, b, equal_nan=True), (np.shape(a), a, b)
print("waves bit for bit")
"""


def test_four_devices_match_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  proc = python("-c", MULTI_DEVICE, str(tmp_path), env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "devices 4" in proc.stdout and "waves bit for bit" in proc.stdout


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"model": "resnet"}, r"unknown model 'resnet'; valid: a registered model \(lenet, conv2, conv4, conv6, vgg19, "
                          r"mlp\) or your own Flax model as FILE.py:FACTORY or MODULE:FACTORY"),
    ({"dataset": "imagenet"}, "--dataset='imagenet' is not valid; valid: mnist, fashion_mnist, cifar10"),
    ({"optimizer": "rmsprop"}, "--optimizer='rmsprop' is not valid; valid: sgd, momentum, adam"),
  ],
)
def test_bad_names_list_valid_choices(overrides, message):
  with pytest.raises(ValueError, match=message):
    config.TrainConfig(**overrides).resolve()


def test_resume_with_other_config_shows_differences(tmp_path):
  ds = _small_mnist()
  train.train(config.TrainConfig(model="lenet", steps=20, batch_size=32), str(tmp_path), dataset=ds, **QUIET)
  with pytest.raises(ConfigMismatch, match=r"--steps: the trained model used 20, the flags ask 30"):
    train.train(config.TrainConfig(model="lenet", steps=30, batch_size=32), str(tmp_path), dataset=ds, **QUIET)


def test_non_finite_loss_names_iteration_and_keeps_checkpoint(tmp_path):
  ds = _small_mnist()
  ok = config.TrainConfig(model="lenet", steps=200, batch_size=32, optimizer="sgd", learning_rate=1e-3)
  train.train(ok, str(tmp_path), dataset=ds, checkpoint_every_secs=0, max_epochs=1, **QUIET)
  recorded = storage.read_json(str(tmp_path / "config.json"))  # the same run, its learning rate made to diverge
  storage.write_json(str(tmp_path / "config.json"), {**recorded, "learning_rate": 1e12})
  bad = config.TrainConfig(model="lenet", steps=200, batch_size=32, optimizer="sgd", learning_rate=1e12)
  with pytest.raises(FloatingPointError, match=r"non-finite training loss at iteration (2[1-9]|3\d|40)\b"):
    train.train(bad, str(tmp_path), dataset=ds, checkpoint_every_secs=0, **QUIET)
  assert Run(str(tmp_path)).checkpoints().latest_step() == 20


def _windows(img_HxWxC, pad):
  """Every (row offset, column offset, flipped) window of the zero-padded image, as a dict."""
  h, w, _ = img_HxWxC.shape
  padded = np.pad(img_HxWxC, ((pad, pad), (pad, pad), (0, 0)))
  windows = {}
  for i in range(2 * pad + 1):
    for j in range(2 * pad + 1):
      crop = padded[i : i + h, j : j + w]
      windows[i, j, False], windows[i, j, True] = crop, crop[:, ::-1]
  return windows


def test_augmentation_crops_a_window_of_the_padded_image_and_flips_some():
  # distinct pixel values (all >= 1, so never confused with padding): each output has exactly one origin
  x = np.arange(256 * 28 * 28, dtype=np.float32).reshape(256, 28, 28, 1) + 1
  out = np.asarray(data.augment_batch(jnp.asarray(x), jax.random.key(0)))  # default pad 4
  assert out.shape == x.shape
  origins = []
  for img, src in zip(out, x):
    found = [o for o, window in _windows(src, 4).items() if np.array_equal(img, window)]
    assert len(found) == 1, found
    origins += found
  rows, cols, flips = zip(*origins)
  assert set(rows) == set(range(9)) and set(cols) == set(range(9))  # every offset of +-4 pixels occurs
  assert 0.35 < np.mean(flips) < 0.65  # about half the images are flipped
  # raw uint8 images stay uint8, so the model still scales them by 1/255 before standardising
  assert data.augment_batch(jnp.zeros((2, 28, 28, 1), jnp.uint8), jax.random.key(0)).dtype == jnp.uint8


def test_train_step_trains_on_the_augmented_batch():
  """One SGD step on a one-image batch: with augment off it equals a hand-written step on the image,
  with augment on a hand-written step on exactly one other of its 162 crops/flips."""
  ds = _small_mnist(n_train=16)
  lr, i = 0.1, 3
  jit_step = jax.jit(steps.train_step, static_argnames="setup")
  after = {}
  for augment in (False, True):
    cfg = config.TrainConfig(model="lenet", steps=10, batch_size=1, optimizer="sgd", learning_rate=lr, augment=augment)
    setup = steps.make_setup(cfg.resolve(), ds)
    state = steps.init_state(setup, ds.image_shape)
    params0 = jax.tree.map(lambda a: a[0], state.params)
    stepped = jit_step(setup, state, jnp.array([[i]]), steps.device_data(setup, ds)[0])[0]
    after[augment] = jax.tree.map(lambda a: a[0], stepped.params)

  def manual_step(x_HxWxC):
    loss = lambda p: -jax.nn.log_softmax(setup.model.apply({"params": p}, x_HxWxC[None])[0])[ds.train_y[i]]
    return jax.tree.map(lambda p, g: p - lr * g, params0, jax.grad(loss)(params0))

  windows = _windows(ds.train_x[i], 4)
  candidates = jax.jit(jax.vmap(manual_step))(jnp.stack(list(windows.values())))
  for augment, params in after.items():
    diff = jax.tree.map(lambda c, p: jnp.abs(c - p).reshape(len(windows), -1).max(1), candidates, params)
    diff = np.max(np.stack(jax.tree.leaves(diff)), 0)
    matches = [o for o, d in zip(windows, diff) if d < 1e-5]  # other windows differ by ~0.1
    assert len(matches) == 1, sorted(diff)[:3]
    assert (matches[0] == (4, 4, False)) == (not augment), matches  # (4, 4, False): the image itself


@pytest.mark.skipif(not os.path.isdir(data.SYSTEM_DIRS["fashion_mnist"]),
                    reason="apt-get install dataset-fashion-mnist (CI does)")
def test_conv2_trains_on_real_fashion_mnist_at_28x28x1(tmp_path):
  full = data.load_dataset("fashion_mnist")
  ds = data.Dataset("fashion_mnist", full.source, full.train_x[:3200], full.train_y[:3200], full.val_x[:500],
                    full.val_y[:500], full.test_x[:1000], full.test_y[:1000], 10, full.mean, full.std, full.files)
  cfg = config.TrainConfig(model="conv2", dataset="fashion_mnist", width=0.125, steps=150, batch_size=32, eval_every=50)
  results = train.train(cfg, str(tmp_path), dataset=ds, **QUIET)
  # by hand, width 1/8 at 28x28x1: conv1 3*3*1*8+8, conv2 3*3*8*8+8, fc1 (14*14*8)*32+32, fc2 32*32+32, fc3 32*10+10
  assert results["parameters"] == 80 + 584 + 50208 + 1056 + 330
  assert results["dataset"]["files"][0]["sha256"] == full.files[0]["sha256"]
  assert results["test_accuracy"][0] > 0.6  # ten balanced classes: chance is 0.1

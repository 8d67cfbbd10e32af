"""The models' CPU convolution (`models/conv.py`) and max-pool: values and gradients against a float64
reference written here (NumPy im2col) on every shape the models use, both weight-gradient formulations,
BatchNorm models and replicas under vmap against `lax.conv_general_dilated`, and the pool against
`reduce_window` bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from redundancy_jax.core.errors import BadOption
from redundancy_jax.models import conv, create_model, init_variables, onednn
from redundancy_jax.models.common import max_pool

EPS32 = np.finfo(np.float32).eps


def _im2col64(x):
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return np.concatenate([xp[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1).reshape(n * h * w, 9 * c)


def _reference(x, w, g):
  """Forward, input gradient and weight gradient in float64 (SAME, stride 1), and the same products of
  absolute values (the scale of each sum, for the float32 rounding bound)."""
  x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
  n, h, wd, c = x.shape
  o = w.shape[-1]
  cols, W = _im2col64(x), w.reshape(9 * c, o)
  out, out_abs = cols @ W, np.abs(cols) @ np.abs(W)
  dW, dW_abs = cols.T @ g.reshape(-1, o), np.abs(cols).T @ np.abs(g).reshape(-1, o)
  # dx: the transposed convolution, scattered back from the 9 shifted copies
  dcols, dcols_abs = g.reshape(-1, o) @ W.T, np.abs(g).reshape(-1, o) @ np.abs(W).T
  def scatter(d):
    d = d.reshape(n, h, wd, 9, c)
    dxp = np.zeros((n, h + 2, wd + 2, c))
    for k in range(9):
      i, j = divmod(k, 3)
      dxp[:, i : i + h, j : j + wd] += d[:, :, :, k]
    return dxp[:, 1:-1, 1:-1]
  return ((out.reshape(n, h, wd, o), out_abs.reshape(n, h, wd, o)), (scatter(dcols), scatter(dcols_abs)),
          (dW.reshape(w.shape), dW_abs.reshape(w.shape)))


# every (input channels, output channels, spatial size) the models train with: first layers of 1 and 3
# channels, 64..512 channels, 28x28 down to 2x2 (VGG19 on 28x28 inputs: 28, 14, 7, 4, 2, 1)
SHAPES = [(1, 64, 28), (3, 64, 32), (3, 16, 7), (64, 64, 28), (64, 128, 14), (128, 128, 16), (128, 256, 7),
          (256, 256, 8), (256, 512, 4), (512, 512, 2), (512, 512, 1), (8, 16, 3)]


def _use(monkeypatch, formulation):
  """The rule with the weight gradient `formulation` ("xla", "matmul"), or oneDNN for all three parts."""
  if formulation == "onednn":
    if onednn.unavailable():  # .ci/run installs oneDNN and a compiler; a machine without them says so here
      pytest.skip(onednn.unavailable())
    monkeypatch.setenv("REDUNDANCY_JAX_CONV", "onednn")
  else:
    monkeypatch.setenv("REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT", formulation)


@pytest.mark.parametrize("formulation", ["xla", "matmul", "onednn"])
@pytest.mark.parametrize("c, o, size", SHAPES)
def test_value_and_gradients_equal_float64_within_float32_rounding(monkeypatch, formulation, c, o, size):
  _use(monkeypatch, formulation)
  rng = np.random.default_rng(c * 1000 + o + size)
  n = 4 if size > 8 else 8
  x = rng.standard_normal((n, size, size, c)).astype(np.float32)
  w = (rng.standard_normal((3, 3, c, o)) * np.sqrt(2 / (9 * (c + o)))).astype(np.float32)
  g = rng.standard_normal((n, size, size, o)).astype(np.float32)
  out, vjp = jax.vjp(conv.conv3x3, jnp.asarray(x), jnp.asarray(w))
  dx, dw = vjp(jnp.asarray(g))
  ref = _reference(x, w, g)
  for name, got, (exact, scale), terms in (("forward", out, ref[0], 9 * c), ("input gradient", dx, ref[1], 9 * o),
                                           ("weight gradient", dw, ref[2], n * size * size)):
    bound = 4 * terms * EPS32 * scale + 1e-30  # the worst-case rounding of sums of `terms` float32 products
    error = np.abs(np.asarray(got, np.float64) - exact)
    assert np.all(error <= bound), (name, float((error / bound).max()))
    assert np.median(error[scale > 0] / scale[scale > 0]) < 1e-5, name  # typical: far below the bound
  expected = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(out, expected, rtol=0, atol=float(8 * 9 * c * EPS32 * np.abs(ref[0][1]).max()))


def test_the_rule_picks_by_the_cpu_and_the_override_wins(monkeypatch):
  monkeypatch.delenv("REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT", raising=False)
  monkeypatch.setattr(conv, "has_avx512", lambda: False)
  monkeypatch.setattr(conv.platform, "machine", lambda: "x86_64")
  assert conv.weight_gradient_formulation() == "matmul"
  monkeypatch.setattr(conv, "has_avx512", lambda: True)
  assert conv.weight_gradient_formulation() == "xla"
  monkeypatch.setattr(conv.platform, "machine", lambda: "aarch64")
  assert conv.weight_gradient_formulation() == "xla"
  monkeypatch.setenv("REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT", "matmul")
  assert conv.weight_gradient_formulation() == "matmul"
  monkeypatch.setenv("REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT", "fast")
  with pytest.raises(ValueError, match="valid: xla, matmul"):
    conv.weight_gradient_formulation()


def test_a_bad_conv_choice_names_the_valid_ones(monkeypatch):
  monkeypatch.setenv("REDUNDANCY_JAX_CONV", "mkl")
  with pytest.raises(BadOption, match="valid: lax, onednn"):
    conv.conv_general_dilated(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), (1, 1), "SAME",
                              dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_onednn_without_a_compiler_or_onednn_says_what_to_install(monkeypatch, tmp_path):
  monkeypatch.setenv("REDUNDANCY_JAX_CACHE", str(tmp_path))  # nothing built here yet
  monkeypatch.delenv("CXX", raising=False)
  monkeypatch.setattr(onednn.shutil, "which", lambda name: None)
  with pytest.raises(BadOption, match="apt-get install libdnnl-dev g"):
    onednn.build()
  monkeypatch.setenv("CXX", "true")  # a "compiler" that writes nothing: no library may appear
  with pytest.raises(BadOption, match="without writing a library"):
    onednn.build()
  assert not list(tmp_path.iterdir())


def test_a_built_library_that_no_longer_loads_says_what_to_install(monkeypatch, tmp_path):
  monkeypatch.setenv("REDUNDANCY_JAX_CACHE", str(tmp_path))
  with open(onednn.library_path(), "wb") as f:  # as if oneDNN's own library had been removed since the build
    f.write(b"not a shared library")
  onednn._registered.cache_clear()
  try:
    with pytest.raises(BadOption, match="could not load its library.*apt-get install libdnnl-dev"):
      onednn._registered()
  finally:
    onednn._registered.cache_clear()  # the next call registers the real library again


def test_onednn_changes_only_the_training_steps_convolutions(monkeypatch):
  """Outside differentiation `conv3x3` is the rule's forward bit for bit (evaluations and analyses are
  unchanged); under differentiation the forward is oneDNN's (equal to rounding, tested above)."""
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16))
  w = jax.random.normal(jax.random.key(1), (3, 3, 16, 8)) / 12
  rule = conv.conv3x3(x, w)
  _use(monkeypatch, "onednn")
  np.testing.assert_array_equal(jax.jit(conv.conv3x3)(x, w), rule)
  assert "ffi_call" not in str(jax.make_jaxpr(conv.conv3x3)(x, w))
  assert str(jax.make_jaxpr(lambda x, w: jax.vjp(conv.conv3x3, x, w)[0])(x, w)).count("ffi_call") == 1


@pytest.mark.parametrize("n, c, o, size", [(4, 64, 64, 16), (6, 16, 32, 8), (2, 8, 4, 5)])
def test_written_out_backward_filter_is_xlas_own_bit_for_bit(n, c, o, size):
  """`conv._backward_filter` (the transposes written out, the input's behind a conditional) against the
  weight gradient XLA derives from the convolution's VJP: the same Eigen kernel on the same operands, so
  equal bit for bit, with a bias and ReLU producing the input inside the jitted function (what XLA would
  fuse), and under vmap (where the conditional becomes a select)."""
  k = jax.random.split(jax.random.key(n * c + o), 3)
  z = jax.random.normal(k[0], (3, n, size, size, c))
  b = jax.random.normal(k[1], (3, c))
  g = jax.random.normal(k[2], (3, n, size, size, o))
  ours = lambda z, b, g: conv._backward_filter(jax.nn.relu(z + b), g)
  xla = lambda z, b, g: jax.vjp(lambda w: conv._xla(jax.nn.relu(z + b), w), jnp.zeros((3, 3, c, o)))[1](g)[0]
  expected = jax.jit(jax.vmap(xla))(z, b, g)
  np.testing.assert_array_equal(jax.jit(jax.vmap(ours))(z, b, g), expected)
  for r in range(3):
    np.testing.assert_array_equal(jax.jit(ours)(z[r], b[r], g[r]), expected[r])
  x64, g64 = np.maximum(np.asarray(z[0] + b[0][None, None, None], np.float64), 0), np.asarray(g[0], np.float64)
  np.testing.assert_allclose(expected[0], (_im2col64(x64).T @ g64.reshape(-1, o)).reshape(3, 3, c, o),
                             rtol=1e-4, atol=1e-4 * np.sqrt(n * size * size))


def _loss_grad(model, variables, x, y):
  def loss(params):
    logits, _ = model.apply_train({**variables, "params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("name, options, shape, formulation", [
  ("conv2", {"batch_norm": True, "width": 0.25}, (28, 28, 1), "xla"),
  # VGG19 whole, vmapped, the longest to compile: the end-to-end tier, both formulations (its shapes, 2x2
  # and 1x1 maps included, are checked part by part against float64 above)
  pytest.param("vgg19", {"width": 0.125}, (28, 28, 1), "xla", marks=pytest.mark.e2e),
  ("conv6", {"width": 0.25}, (32, 32, 3), "xla"),
  ("conv2", {"batch_norm": True, "width": 0.25}, (28, 28, 1), "onednn"),
  pytest.param("vgg19", {"width": 0.125}, (28, 28, 1), "onednn", marks=pytest.mark.e2e),
])
def test_model_gradients_equal_lax_conv_also_with_batchnorm_and_under_vmap(monkeypatch, name, options, shape, formulation):
  """The whole model's parameter gradients with the CPU convolution (the rule, or oneDNN) against
  `lax.conv_general_dilated` (float32 both: equal within rounding), and vmapped over 3 replicas against
  each replica alone."""
  if formulation == "onednn":
    _use(monkeypatch, formulation)
  model = create_model(name, **options)
  keys = jax.random.split(jax.random.key(0), 3)
  stacked = jax.vmap(lambda k: init_variables(model, k, shape))(keys)
  x = jax.random.uniform(jax.random.key(1), (3, 8, *shape))
  y = jax.random.randint(jax.random.key(2), (3, 8), 0, 10)
  ours = jax.jit(jax.vmap(lambda v, x, y: _loss_grad(model, v, x, y)))(stacked, x, y)
  monkeypatch.setenv("REDUNDANCY_JAX_CONV", "lax")
  reference = jax.jit(lambda v, x, y: _loss_grad(model, v, x, y))  # traced (with lax) once, for every replica
  for r in range(3):
    expected = reference(jax.tree.map(lambda a: a[r], stacked), x[r], y[r])
    largest = max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(expected))
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(expected)):
      got, scale = np.asarray(got[r]), float(np.abs(np.asarray(want)).max())
      if scale < 1e-3 * largest:  # an exact gradient of 0 (a bias before BatchNorm): both are rounding noise
        assert np.abs(got).max() < 1e-3 * largest, path
      else:
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4 * scale, err_msg=str(path))


@pytest.mark.parametrize("shape", [(8, 32, 32, 16), (4, 7, 7, 5), (3, 1, 1, 2), (2, 28, 28, 3)])
def test_max_pool_equals_reduce_window_bit_for_bit_ties_included(shape):
  reduce_window = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), shape))
  for v in (x, jnp.round(x * 2) / 2):  # the second with many ties (and many zeros)
    np.testing.assert_array_equal(max_pool(v), reduce_window(v))
    grad = lambda pool: jax.grad(lambda a: jnp.sum(jnp.sin(pool(a))))(v)
    np.testing.assert_array_equal(grad(max_pool), grad(reduce_window))

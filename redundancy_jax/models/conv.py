"""The models' 3x3 convolution, with each part in its fastest exact formulation on CPU (issue 19;
measured in BUILD_NOTES.md, "Convolutions on CPU"); accelerators use `lax.conv_general_dilated` as is
(cuDNN, the TPU's convolution units).

On CPU a custom VJP picks, by a documented rule, for a stride-1 SAME 3x3 convolution in NHWC / HWIO:
- forward: XLA's convolution, except for inputs of at most `FEW_CHANNELS` channels (the first layers: 1 or
  3), where one matmul of the 9 shifted copies of the input (im2col, K = 9 c_in) is up to 3x faster, and
  for maps of at most `SMALL_MAP` positions (VGG19's last stage, 2x2), where XLA's takes 90x longer
  (343 ms against 3.8 ms for 512 -> 512 channels, batch 64);
- input gradient: XLA's convolution of the output gradient with the flipped kernel; for maps of at most
  `SMALL_MAP` positions the nine shifted matmuls g_shift @ W_ij^T (356 ms against 4.1 ms);
- weight gradient: XLA's backward-filter convolution on CPUs with AVX-512 (written out, `_backward_filter`,
  so that XLA transposes the stored input rather than recomputing its ReLU or max-pool inside the
  transpose: bit for bit XLA's own; a Conv-6 step's transposes 100 -> 47 ms); on x86 CPUs without it,
  where XLA:CPU's backward-filter convolution is 5-14x slower (1.6-4.2 s against 0.29 s for 64 -> 64
  channels at 28x28, batch 64), the nine products x_shift^T @ g of the shifted input with the output
  gradient, each a (c_in, N H W) x (N H W, c_out) matmul; with few input channels, one im2col matmul.

`REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT=xla|matmul` overrides the rule (benchmarks/conv.py measures every
formulation on the machine at hand and says which the rule picks); `REDUNDANCY_JAX_CONV=lax` uses
`lax.conv_general_dilated` everywhere (for comparisons); `REDUNDANCY_JAX_CONV=onednn` computes all three
parts of a float32 convolution in a training step with oneDNN (`models/onednn.py`: up to 2.3x faster per part
on AVX-512 CPUs; equal to the rule's formulations to float32 rounding, not bit for bit, hence opt-in). Only
the step's convolutions change: outside differentiation (evaluation, pruning sweeps, the analyses, and
the jaxpr that `models/topology.py` reads) `conv3x3` is the rule's forward, so every number measured on a
trained network is computed as before. A user's network gets the same for its stride-1 SAME 3x3
convolutions in its training step (`Network.apply_train` routes them to `onednn_conv_general_dilated`,
`xla_conv3x3`: XLA's forward, as flax computes it, outside differentiation).

"XLA's convolution" means XLA:CPU's Eigen convolution: `configure_xla_cpu`, run when `redundancy_jax` is
imported, keeps XLA:CPU from handing convolutions to YNNPACK (its default in jaxlib 0.10), which runs
them 1.5-2.5x slower here; dots and reductions stay with YNNPACK, so models without convolutions compute
bit for bit what they did.
"""

from __future__ import annotations

import functools
import os
import platform

import jax
import jax.numpy as jnp
from jax import lax
from redundancy_jax.core.errors import BadOption
from redundancy_jax.models import onednn

FEW_CHANNELS = 4
SMALL_MAP = 4  # positions (H W) of a map XLA's convolution is pathologically slow on
_NHWC = ("NHWC", "HWIO", "NHWC")
# jaxlib 0.10's default YNNPACK fusions are "individual_dot,individual_convolution,reduce" (found by
# reproducing a LeNet run bit for bit); this keeps all but the convolutions.
YNN_FUSIONS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"


def configure_xla_cpu() -> bool:
  """Adds `YNN_FUSIONS` to XLA_FLAGS, for the jaxlib it was measured on (0.10.x), unless XLA_FLAGS already
  sets the YNNPACK fusions or `REDUNDANCY_JAX_KEEP_XLA_FLAGS` is set. Takes effect only when it runs
  before JAX starts its backend (import `redundancy_jax` first): if the backend has started, it changes
  nothing and warns. Returns whether the flag is in effect because of this call."""
  from importlib import metadata

  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags or os.environ.get("REDUNDANCY_JAX_KEEP_XLA_FLAGS"):
    return False
  if _backend_started():
    import warnings

    warnings.warn("redundancy_jax was imported after JAX started its backend, so XLA:CPU keeps handing convolutions "
                  "to YNNPACK (1.5-2.5x slower here); import redundancy_jax before using JAX", stacklevel=3)
    return False
  try:
    version = metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return False
  if not version.startswith("0.10."):  # an unknown flag would stop XLA at start-up
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {YNN_FUSIONS}".strip()
  return True


def _backend_started() -> bool:
  """Whether JAX has started a backend (after which XLA_FLAGS are no longer read). JAX has no public API
  for this; `jax._src.xla_bridge.backends_are_initialized` exists in jax 0.7-0.10 (tests/test_conv.py fails
  when it moves), and without it the answer is False."""
  import sys

  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge

  started = getattr(xla_bridge, "backends_are_initialized", None)
  return bool(started and started())


@functools.cache
def has_avx512() -> bool:
  """Whether this CPU has AVX-512 (the `avx512f` flag in /proc/cpuinfo; False where it cannot be read)."""
  try:
    with open("/proc/cpuinfo") as f:
      return any(line.startswith("flags") and " avx512f" in line for line in f)
  except OSError:
    return False


def weight_gradient_formulation() -> str:
  """"xla" or "matmul": the rule of the module docstring, or the environment's override."""
  forced = os.environ.get("REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT")
  if forced:
    if forced not in ("xla", "matmul"):
      raise BadOption(f"REDUNDANCY_JAX_CONV_WEIGHT_GRADIENT={forced!r}; valid: xla, matmul")
    return forced
  x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
  return "matmul" if x86 and not has_avx512() else "xla"


CONV_CHOICES = ("lax", "onednn")


def conv_choice() -> str:
  """`REDUNDANCY_JAX_CONV`: "" (the rule above), "lax" or "onednn"."""
  choice = os.environ.get("REDUNDANCY_JAX_CONV", "")
  if choice and choice not in CONV_CHOICES:
    raise BadOption(f"REDUNDANCY_JAX_CONV={choice!r}; valid: {', '.join(CONV_CHOICES)} (or unset, for the rule of "
                    "redundancy_jax/models/conv.py)")
  return choice


def _by_onednn(x) -> bool:
  return x.dtype == jnp.float32 and conv_choice() == "onednn"


def _xla(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_NHWC)


def _shifts(x):
  """The 9 copies of `x` (N, H, W, C) shifted by the 3x3 window's offsets, zero-padded (SAME)."""
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)]


def _im2col(x):
  """(N H W, 9 C): each position's 3x3 neighbourhood, in the kernel's (kh, kw, c) order."""
  return jnp.concatenate(_shifts(x), -1).reshape(-1, 9 * x.shape[-1])


def _forward(x, w):
  n, h, wd, c = x.shape
  if c <= FEW_CHANNELS or h * wd <= SMALL_MAP:
    return (_im2col(x) @ w.reshape(-1, w.shape[-1])).reshape(n, h, wd, w.shape[-1])
  return _xla(x, w)


def _input_gradient(x, w, g):
  if _by_onednn(x):
    return onednn.input_gradient(x.shape, w, g)
  n, h, wd, c = x.shape
  if h * wd <= SMALL_MAP:  # each input position gathers the output gradients its 3x3 window reached
    o = w.shape[-1]
    gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = [gp[:, 2 - i : 2 - i + h, 2 - j : 2 - j + wd].reshape(-1, o) @ w[i, j].T for i in range(3) for j in range(3)]
    return sum(taps).reshape(x.shape)
  return jax.vjp(lambda v: _xla(v, w), x)[1](g)[0]


def _weight_gradient(x, g, kernel_shape):
  if _by_onednn(x):
    return onednn.weight_gradient(x, g)
  c, o = kernel_shape[2], kernel_shape[3]
  if x.shape[-1] <= FEW_CHANNELS:
    return (_im2col(x).T @ g.reshape(-1, o)).reshape(kernel_shape)
  if weight_gradient_formulation() == "matmul":
    g_2d = g.reshape(-1, o)
    return jnp.stack([s.reshape(-1, c).T @ g_2d for s in _shifts(x)]).reshape(kernel_shape)
  return _backward_filter(x, g)


def _backward_filter(x, g):
  """XLA's backward-filter convolution, written out: the one XLA derives from `_xla`'s VJP (the same
  operands, the same Eigen kernel, bit for bit), with the input's batch and channel axes swapped here,
  behind `_as_stored`, so that XLA transposes the stored input instead of recomputing its producer (a
  bias, ReLU or max-pool) inside the transpose at strided addresses (a Conv-6 step's transposes: 100 ->
  47 ms on an Intel Xeon)."""
  x_CxHxWxN = _as_stored(lambda v: jnp.transpose(v, (3, 1, 2, 0)), x)
  g_HxWxNxO = jnp.transpose(g, (1, 2, 0, 3))
  dw_Cx3x3xO = lax.conv_general_dilated(x_CxHxWxN, g_HxWxNxO, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC)
  return jnp.transpose(dw_Cx3x3xO, (1, 2, 0, 3))


def _as_stored(f, x):
  """`f(x)` on the stored `x`: XLA:CPU fuses an elementwise producer of `x` into a transpose that reads it
  (and drops `lax.optimization_barrier` before fusing), but not across a conditional, whose two branches
  here are the same `f` (under `vmap` the conditional becomes a select of two equal values, and XLA fuses
  again: slower, the same values)."""
  return lax.cond(jnp.isnan(x[(0,) * x.ndim]), f, f, x)


@jax.custom_vjp
def conv3x3(x: jax.Array, w: jax.Array) -> jax.Array:
  """A stride-1 SAME 3x3 convolution of `x` (N, H, W, C) by `w` (3, 3, C, O), the CPU formulations above."""
  return _forward(x, w)


def _forward_rule(primal):
  """A custom VJP's forward rule: oneDNN's forward under the opt-in, else `primal`'s."""
  def fwd(x, w):
    if _by_onednn(x) and x.shape[-1] > FEW_CHANNELS:  # with 1-3 channels oneDNN's forward loses to im2col's
      return onednn.forward(x, w), (x, w)
    return primal(x, w), (x, w)
  return fwd


def _conv3x3_bwd(residuals, g):
  x, w = residuals
  return _input_gradient(x, w, g), _weight_gradient(x, g, w.shape)


conv3x3.defvjp(_forward_rule(_forward), _conv3x3_bwd)


@jax.custom_vjp
def xla_conv3x3(x: jax.Array, w: jax.Array) -> jax.Array:
  """A network's own stride-1 SAME 3x3 convolution (a user's `nn.Conv`) in a training step under
  `REDUNDANCY_JAX_CONV=onednn`: XLA's convolution, bit for bit what flax computes, outside differentiation;
  differentiated, oneDNN's parts as in `conv3x3` (`Network.apply_train` routes it here)."""
  return _xla(x, w)


xla_conv3x3.defvjp(_forward_rule(_xla), _conv3x3_bwd)


def conv_general_dilated(lhs, rhs, *args, **kwargs):
  """`lax.conv_general_dilated`'s signature (what `flax.linen.Conv` calls): the CPU `conv3x3` for the
  models' convolutions, XLA's convolution for anything else and on accelerators."""
  cpu = jax.default_backend() == "cpu" and conv_choice() != "lax"
  return _plain_or_lax(conv3x3 if cpu else None, lhs, rhs, *args, **kwargs)


def onednn_conv_general_dilated(lhs, rhs, *args, **kwargs):
  """`lax.conv_general_dilated`'s signature for a network's own convolutions in a training step under
  `REDUNDANCY_JAX_CONV=onednn`: `xla_conv3x3` where the call is a stride-1 SAME 3x3 float32 convolution
  without a precision, XLA's convolution for anything else."""
  return _plain_or_lax(xla_conv3x3 if lhs.dtype == rhs.dtype == jnp.float32 else None, lhs, rhs, *args, **kwargs)


def _plain_or_lax(plain_conv, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                  dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`plain_conv(lhs, rhs)` where the call is this module's stride-1 SAME 3x3 convolution (NHWC / HWIO,
  no dilation, groups or precision; NNX passes `out_sharding=None`), else `lax.conv_general_dilated`."""
  same = padding == "SAME" or (not isinstance(padding, str) and tuple(map(tuple, padding)) == ((1, 1), (1, 1)))
  plain = (rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1) and same
           and tuple(lhs_dilation or (1, 1)) == (1, 1) and tuple(rhs_dilation or (1, 1)) == (1, 1)
           and feature_group_count == 1 and precision is None and _is_nhwc(dimension_numbers)
           and all(v is None for v in kwargs.values()))
  if plain_conv is not None and plain:
    return plain_conv(lhs, rhs)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                  feature_group_count=feature_group_count, precision=precision, **kwargs)


def _is_nhwc(dimension_numbers) -> bool:
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == (lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC))
  return tuple(dimension_numbers or ()) == _NHWC

"""The formulations `benchmarks.conv` times for each part of the models' 3x3 convolution, and which of them
the rule of `redundancy_jax.models.conv` (and `REDUNDANCY_JAX_CONV=onednn`) runs. A module without flags,
so that tests can import it beside the other benchmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from redundancy_jax.models import conv, onednn


def formulations(c: int, o: int):
  """{part: {name: function}} for one shape."""
  xla_dx = lambda x, w, g: jax.vjp(lambda v: conv._xla(v, w), x)[1](g)[0]
  xla_dw = lambda x, w, g: conv._backward_filter(x, g)  # XLA's backward-filter convolution, as the rule uses it

  def shifted_dx(x, w, g):
    gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, wd, _ = x.shape
    out = sum(gp[:, 2 - i : 2 - i + h, 2 - j : 2 - j + wd].reshape(-1, o) @ w[i, j].T
              for i in range(3) for j in range(3))
    return out.reshape(x.shape)

  shifted_dw = lambda x, w, g: jnp.stack([s.reshape(-1, c).T @ g.reshape(-1, o) for s in conv._shifts(x)]).reshape(w.shape)
  im2col_dw = lambda x, w, g: (conv._im2col(x).T @ g.reshape(-1, o)).reshape(w.shape)
  im2col_fwd = lambda x, w, g: (conv._im2col(x) @ w.reshape(-1, o)).reshape(*x.shape[:3], o)
  parts = {"forward": {"xla": lambda x, w, g: conv._xla(x, w), "im2col": im2col_fwd},
           "input gradient": {"xla": xla_dx, "shifted matmuls": shifted_dx},
           "weight gradient": {"xla": xla_dw, "shifted matmuls": shifted_dw, "im2col": im2col_dw}}
  if not onednn.unavailable():
    parts["forward"]["onednn"] = lambda x, w, g: onednn.forward(x, w)
    parts["input gradient"]["onednn"] = lambda x, w, g: onednn.input_gradient(x.shape, w, g)
    parts["weight gradient"]["onednn"] = lambda x, w, g: onednn.weight_gradient(x, g)
  return parts


def onednn_choice(part: str, c: int) -> str:
  """What `REDUNDANCY_JAX_CONV=onednn` runs for this part (`models/conv.py`: im2col's forward for the
  first layers)."""
  return "im2col" if part == "forward" and c <= conv.FEW_CHANNELS else "onednn"


def rule(part: str, c: int, side: int) -> str:
  small = side * side <= conv.SMALL_MAP
  if part == "forward" and (c <= conv.FEW_CHANNELS or small):
    return "im2col"
  if part == "input gradient" and small:
    return "shifted matmuls"
  if part == "weight gradient" and c <= conv.FEW_CHANNELS:
    return "im2col"
  if part == "weight gradient" and conv.weight_gradient_formulation() == "matmul":
    return "shifted matmuls"
  return "xla"

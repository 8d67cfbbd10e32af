"""The models' 3x3 convolution by oneDNN, called from XLA through `jax.ffi` (opt-in: `REDUNDANCY_JAX_CONV=onednn`;
issue 29, BUILD_NOTES.md "oneDNN's convolutions").

XLA:CPU's Eigen convolutions are compiled into jaxlib for 256-bit vectors; oneDNN picks its kernels for the
CPU at run time. Measured on 2 cores of an AMD EPYC with AVX-512 (batch 64, 32x32, 64 -> 64 channels):
forward 23.6 ms against 34.2, input gradient 24.7 against 30.1, weight gradient 25.9 against 60.3.
The float32 sums run in another order, so results agree with the default formulations to rounding (tested
against float64), not bit for bit: that is why it is not the default.

`onednn_conv.cc` (beside this file) holds the three XLA FFI handlers. It is compiled on first use with the
system's C++ compiler against oneDNN (Debian/Ubuntu: `apt-get install libdnnl-dev g++`) and jaxlib's FFI
headers, into `$REDUNDANCY_JAX_CACHE` (default `~/.cache/redundancy_jax`), under a name that hashes the
source and the jaxlib version, so a changed source or jaxlib rebuilds it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile

import jax
from redundancy_jax.core.errors import BadOption

SOURCE = os.path.join(os.path.dirname(__file__), "onednn_conv.cc")
HEADER = "oneapi/dnnl/dnnl.hpp"
INSTALL = "apt-get install libdnnl-dev g++ (Debian/Ubuntu: oneDNN's library and headers, and a C++ compiler)"
_TARGETS = {"forward": "RjConvForward", "input_gradient": "RjConvInputGradient", "weight_gradient": "RjConvWeightGradient"}


def cache_dir() -> str:
  return os.environ.get("REDUNDANCY_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "redundancy_jax")


def library_path() -> str:
  """Where the compiled handlers for this source and this jaxlib live."""
  from importlib import metadata

  with open(SOURCE, "rb") as f:
    digest = hashlib.sha256(f.read() + metadata.version("jaxlib").encode()).hexdigest()[:16]
  return os.path.join(cache_dir(), f"onednn_conv-{digest}.so")


def build() -> str:
  """Compiles `onednn_conv.cc` unless this source's library is there; returns its path. Raises BadOption
  naming the packages to install when the compiler or oneDNN is missing."""
  path = library_path()
  if os.path.exists(path):
    return path
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if not compiler:
    raise BadOption(f"REDUNDANCY_JAX_CONV=onednn compiles a small C++ file and found no C++ compiler: {INSTALL}; "
                    "or unset REDUNDANCY_JAX_CONV to use XLA's convolutions")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".so")
  os.close(fd)
  command = [compiler, "-O2", "-shared", "-fPIC", "-std=c++17", f"-I{jax.ffi.include_dir()}", SOURCE, "-ldnnl", "-o", tmp]
  try:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0 and not os.path.getsize(tmp):
      raise BadOption(f"REDUNDANCY_JAX_CONV=onednn: {compiler} exited without writing a library; set CXX to a C++ "
                      "compiler, or unset REDUNDANCY_JAX_CONV to use XLA's convolutions")
    if done.returncode != 0:
      missing = HEADER in done.stderr or "ldnnl" in done.stderr
      why = f"oneDNN is not installed: {INSTALL}" if missing else f"the compiler failed:\n{done.stderr[-2000:]}"
      raise BadOption(f"REDUNDANCY_JAX_CONV=onednn could not build {SOURCE}: {why}; or unset REDUNDANCY_JAX_CONV "
                      "to use XLA's convolutions")
    os.replace(tmp, path)  # atomic: a concurrent process sees no library or a whole one
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return path


@functools.cache
def unavailable() -> str | None:
  """None where the handlers build (or are built) here, else why not (the fix included)."""
  try:
    build()
  except BadOption as e:
    return str(e)
  return None


@functools.cache
def _registered() -> bool:
  try:
    library = ctypes.cdll.LoadLibrary(build())
  except OSError as e:  # built once, oneDNN's library gone since
    raise BadOption(f"REDUNDANCY_JAX_CONV=onednn could not load its library ({e}): {INSTALL}; or unset "
                    "REDUNDANCY_JAX_CONV to use XLA's convolutions") from e
  for target in _TARGETS.values():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
  return True


def _call(part: str, shape, a: jax.Array, b: jax.Array) -> jax.Array:
  _registered()
  # Under vmap (replicas with their own kernels) one call per replica: each is a whole convolution.
  return jax.ffi.ffi_call(_TARGETS[part], jax.ShapeDtypeStruct(shape, a.dtype), vmap_method="sequential")(a, b)


def forward(x: jax.Array, w: jax.Array) -> jax.Array:
  """x (N, H, W, C) by w (3, 3, C, O), stride 1, SAME: (N, H, W, O)."""
  return _call("forward", x.shape[:3] + w.shape[3:], x, w)


def input_gradient(x_shape, w: jax.Array, g: jax.Array) -> jax.Array:
  """The gradient with respect to the input (of shape `x_shape`) of the output gradient `g`."""
  return _call("input_gradient", tuple(x_shape), g, w)


def weight_gradient(x: jax.Array, g: jax.Array) -> jax.Array:
  """The gradient with respect to the (3, 3, C, O) kernel."""
  return _call("weight_gradient", (3, 3, x.shape[3], g.shape[3]), x, g)

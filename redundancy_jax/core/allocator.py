"""The C allocator's settings for XLA:CPU (issue 29; BUILD_NOTES.md, "The allocator").

XLA:CPU allocates a program's buffers anew at every call. glibc serves large requests (above its mmap
threshold, at most 32 MiB, and from threads other than the main one above 64 MiB always) with fresh
`mmap`s, and every first touch of those pages faults: a Python-stepped Conv-2 epoch took 2.04 million
minor page faults for 60 steps, and its step 156-166 ms against 130-133 ms without them (2 cores of an
AMD EPYC). `configure_allocator` asks glibc (`mallopt`) for one arena, no `mmap`s and a 1 GiB trim
threshold, so that freed buffers are reused in place. The computation is bit for bit the same; the process
keeps more of its peak memory (Conv-2's run: 0.78 -> 0.96-1.07 GB resident).

It runs once, when `redundancy_jax` is imported, before JAX starts its threads (threads that already
have an arena keep it). `REDUNDANCY_JAX_KEEP_MALLOC=1` leaves glibc's defaults; where the C library is
not glibc it does nothing. A preloaded tcmalloc or jemalloc does the same job (README).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30  # freed memory at the heap's top returned to the system only beyond 1 GiB


def configure_allocator() -> bool:
  """Sets the glibc allocator as the module docstring says; returns whether it did."""
  if os.environ.get("REDUNDANCY_JAX_KEEP_MALLOC") or not sys.platform.startswith("linux"):
    return False
  if platform.libc_ver()[0] != "glibc":
    return False
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  done = [libc.mallopt(M_ARENA_MAX, 1), libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
  return all(r == 1 for r in done)

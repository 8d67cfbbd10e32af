"""`core/allocator.py`: once `redundancy_jax` is imported, a large buffer freed and allocated again (as
XLA:CPU does at every call) reuses its pages instead of faulting them in anew. A subprocess each: the
allocator's settings belong to the process."""

import os
import platform
import subprocess
import sys

import pytest

# 128 MiB from the C allocator, written and freed three times by a thread other than the main one (XLA's
# threads allocate its buffers), after one warm-up; prints the minor page faults of those three
SCRIPT = """
import ctypes, resource, threading
import redundancy_jax
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
counted = []
def touch_and_free():
  p = libc.malloc(2**27)
  ctypes.memset(p, 1, 2**27)
  libc.free(p)
def work():
  touch_and_free()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(3):
    touch_and_free()
  counted.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(counted[0])
"""
PAGES = 3 * 2**27 // 4096  # what fresh pages every time would fault: 98,304


def _faults(**env) -> int:
  done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                        env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert done.returncode == 0, done.stderr[-2000:]
  return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the allocator's settings are glibc's (mallopt); elsewhere configure_allocator does nothing")
def test_freed_buffers_are_reused_without_page_faults_unless_kept_to_glibcs_defaults():
  assert _faults(REDUNDANCY_JAX_KEEP_MALLOC="") < PAGES // 20
  assert _faults(REDUNDANCY_JAX_KEEP_MALLOC="1") > PAGES * 0.9  # glibc's defaults: fresh pages each time

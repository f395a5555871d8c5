"""The agent's C heap settings (telegen.helpers.heap) on this glibc: a burst
of big transient buffers freed in the middle of the heap comes back to the
kernel (RSS measured), as it does not without them."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = r"""
import ctypes, sys
from telegen.helpers import heap
if sys.argv[1] == "tuned":
    assert heap.tune()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
big = libc.malloc(16 << 20)          # glibc then raises its mmap threshold to 16 MiB
ctypes.memset(big, 1, 16 << 20)
libc.free(big)
blocks = [libc.malloc(300 << 10) for _ in range(200)]      # 60 MB of 300 KiB buffers
for b in blocks:
    ctypes.memset(b, 1, 300 << 10)
keep = blocks[-1]                                          # pins the heap's top
before = rss()
for b in blocks[:-1]:
    libc.free(b)
if sys.argv[1] == "tuned":
    heap.trim()
print((before - rss()) >> 20)
"""


def freed_mb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


def test_tuned_heap_returns_freed_buffers() -> None:
    assert freed_mb("tuned") >= 50
    assert freed_mb("plain") < 10        # the habit the settings are for

"""The agent's C heap (glibc malloc), kept from growing by its own habits.

Measured on the agent beside two profiled processes: glibc held 33 MB of
which 16 MB were in use — one arena per thread that ever allocated (9) and a
mmap threshold that had grown to 64 MB after a big transient buffer (glibc
raises it to every freed mmapped chunk's size), so later big buffers stayed
in the arenas as holes. :func:`tune` caps the arenas at
:data:`ARENAS` and pins the threshold (buffers from :data:`MMAP_THRESHOLD` up
are mapped and unmapped, never holes); :func:`trim` gives free pages back
(``malloc_trim``: also the pages inside the heaps), called after each window.
Both do nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

ARENAS = 2
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3     # <malloc.h>
_M_ARENA_MAX = -8

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None)
    _mallopt = _libc.mallopt
    _malloc_trim = _libc.malloc_trim
    _mallopt.argtypes, _mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _malloc_trim.argtypes, _malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
except (OSError, AttributeError):       # not glibc (musl has neither)
    _libc = None


def tune() -> bool:
    """Cap arenas and pin the mmap threshold; True when glibc took both."""
    if _libc is None:
        return False
    ok = bool(_mallopt(_M_ARENA_MAX, ARENAS)) and bool(_mallopt(_M_MMAP_THRESHOLD,
                                                                  MMAP_THRESHOLD))
    if not ok:
        log.debug("mallopt refused the heap settings")
    return ok


def trim() -> bool:
    """Give free heap pages back to the kernel; True when some were."""
    return bool(_malloc_trim(0)) if _libc is not None else False

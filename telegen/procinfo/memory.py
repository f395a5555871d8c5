"""Reading another process's memory: ``process_vm_readv(2)``, bounded.

The agent reads interpreter state (CPython thread states, frames, code
objects) of processes it profiles. Their memory is attacker-controlled: every
read has a size cap, a failed or short read is ``None``, and nothing here
follows a pointer — callers decide what to believe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct

MAX_READ = 1 << 20          # one call never reads more than this

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_readv = _libc.process_vm_readv
_readv.restype = ctypes.c_ssize_t
_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]


def read_memory(pid: int, address: int, size: int) -> bytes | None:
    """``size`` bytes at ``address`` in process ``pid``; None when any of it
    is unreadable (unmapped, the process gone) or ``size`` is out of bounds."""
    if size <= 0 or size > MAX_READ or address <= 0 or address + size > 1 << 64:
        return None
    buf = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _IoVec(address, size)
    got = _readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got != size:
        return None
    return buf.raw


def read_u64(pid: int, address: int) -> int | None:
    data = read_memory(pid, address, 8)
    return None if data is None else struct.unpack("<Q", data)[0]

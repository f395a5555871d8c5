"""The BPF ``struct sample_key`` as a hashable Python value."""

from __future__ import annotations

import ctypes
import struct
from typing import Any, NamedTuple

KEY_USER_MODE = 1
KEY_FP_FALLBACK = 2     # bpf/telegen.h: a stack copy failed, frame pointers used
KEY_SPILLED = 4         # bpf/telegen.h: a spillN entry (counts map full); kind = flags >> 8
TASK_COMM_LEN = 16


class CSampleKey(ctypes.Structure):
    """Mirror of ``struct sample_key`` in bpf/telegen.h."""

    _fields_ = [("pid", ctypes.c_uint32), ("tid", ctypes.c_uint32),
                ("user_stack", ctypes.c_int32), ("kernel_stack", ctypes.c_int32),
                ("stack_seq", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("comm", ctypes.c_char * TASK_COMM_LEN),
                ("py_stack", ctypes.c_uint32), ("go_labels", ctypes.c_uint32)]


class CEvent(ctypes.Structure):
    """Mirror of ``struct event`` in bpf/telegen.h."""

    _fields_ = [("kind", ctypes.c_uint32), ("count_seq", ctypes.c_uint32),
                ("ts", ctypes.c_uint64), ("value", ctypes.c_uint64), ("key", CSampleKey)]


class RawKey(NamedTuple):
    pid: int
    tid: int
    user_stack: int      # stack id or -errno
    kernel_stack: int    # stack id, -errno, or -ENOENT when not collected
    stack_seq: int
    flags: int
    comm: str
    py_stack: int = 0    # 0: none; else id of the sample's CPython frames
    go_labels: int = 0   # 0: none; else id of the goroutine's pprof label set

    @property
    def user_mode(self) -> bool:
        return bool(self.flags & KEY_USER_MODE)


_KEY_BYTES = struct.Struct(f"=IIiiII{TASK_COMM_LEN}sII")
if _KEY_BYTES.size != ctypes.sizeof(CSampleKey):
    raise ImportError("struct sample_key and its unpacking disagree")


def raw_key(k: Any) -> RawKey:
    """From a ``CSampleKey`` (its bytes: one unpack, not nine ctypes field reads)."""
    pid, tid, user, kernel, seq, flags, comm, py, go = _KEY_BYTES.unpack(bytes(k))
    return RawKey(pid, tid, user, kernel, seq, flags,
                  comm.split(b"\0", 1)[0].decode("utf-8", "replace"), py, go)

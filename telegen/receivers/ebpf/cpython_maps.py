"""The maps of bpf/cpython.h as the receiver reads them: ``py_stacks``
entries and the walker's counters (``py_stats``), each read with one bpf()
call into buffers made once (a table's ``[]`` makes a key and a value per
read: for a 1 KiB ``py_stack`` that was most of the read's cost).

Both readers belong to one thread (the receiver's window thread): a read
overwrites the buffer the previous one returned.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

from telegen.bpf import syscall as sc

# bpf/cpython.h
PY_MAX_FRAMES = 64
PY_TRUNCATED, PY_FAULT = 1, 2
PY_INSTR_BAD = 0xFFFFFFFF
STAT_NAMES = ("samples", "stacks", "no_thread", "no_frame", "truncated", "fault",
              "collision", "full", "cache_hit", "no_fsbase")


class CPyFrame(ctypes.Structure):
    """Mirror of ``struct py_frame``."""

    _fields_ = [("code", ctypes.c_uint64), ("instr", ctypes.c_uint32),
                ("owner", ctypes.c_uint32)]


class CPyStack(ctypes.Structure):
    """Mirror of ``struct py_stack``."""

    _fields_ = [("hash", ctypes.c_uint64), ("pid", ctypes.c_uint32),
                ("depth", ctypes.c_uint16), ("status", ctypes.c_uint16),
                ("frames", CPyFrame * PY_MAX_FRAMES)]


class StackReader:
    """``py_stacks`` entries by id."""

    def __init__(self, table: Any) -> None:
        self._fd: int = table.map_fd
        self._key = ctypes.c_uint32()
        # as large as the map's values (the kernel writes all of them), seen as a py_stack
        self._buf = (ctypes.c_char * max(ctypes.sizeof(table.Leaf), ctypes.sizeof(CPyStack)))()
        self._view = CPyStack.from_buffer(self._buf)

    def read(self, stack_id: int) -> CPyStack | None:
        """The entry (a view of this reader's buffer, valid until the next
        read), or None when the id holds nothing."""
        self._key.value = stack_id
        try:
            sc.lookup(self._fd, ctypes.addressof(self._key), ctypes.addressof(self._buf))
        except OSError:
            return None
        return self._view


class WalkerStats:
    """``py_stats``: one per-CPU entry of every counter; what changed since the
    last read, summed over the CPUs."""

    def __init__(self, table: Any) -> None:
        self._fd: int = table.map_fd
        size = ctypes.sizeof(table.sLeaf)          # one CPU's value
        self._names = STAT_NAMES[:size // 8]
        self._row = struct.Struct(f"={len(self._names)}Q")
        self._slot = (size + 7) & ~7               # per-CPU values are 8-byte aligned
        self._cpus = sc.possible_cpus()
        self._key = ctypes.c_uint32(0)
        self._buf = ctypes.create_string_buffer(self._slot * self._cpus)
        self._prev = [0] * len(self._names)

    def delta(self) -> dict[str, int]:
        try:
            sc.lookup(self._fd, ctypes.addressof(self._key), ctypes.addressof(self._buf))
        except OSError:
            return dict.fromkeys(self._names, 0)
        now = [sum(column) for column in zip(*(self._row.unpack_from(self._buf, cpu * self._slot)
                                               for cpu in range(self._cpus)), strict=True)]
        delta = {n: a - b for n, a, b in zip(self._names, now, self._prev, strict=True)}
        self._prev = now
        return delta

"""The bpf(2) commands the agent needs, through ctypes (no libbcc, no LLVM).

Map element look-up/update/delete, ``get_next_key``, batch look-up-and-delete,
``BPF_OBJ_GET_INFO_BY_FD``, and creating maps, loading programs and opening
raw tracepoints (:mod:`telegen.bpf.loader`, from a compiled object). Every
call raises ``OSError`` with the kernel's errno; callers turn ENOENT into
``KeyError`` where a mapping is expected.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from functools import cache
from typing import NamedTuple

SYS_BPF = {"x86_64": 321, "aarch64": 280}

MAP_CREATE = 0
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
PROG_LOAD = 5
OBJ_GET_INFO_BY_FD = 15
RAW_TRACEPOINT_OPEN = 17
MAP_LOOKUP_AND_DELETE_BATCH = 25

# enum bpf_map_type (the ones telegen's programs declare, and their per-CPU kin)
MAP_HASH, MAP_ARRAY, MAP_PROG_ARRAY, MAP_PERF_EVENT_ARRAY = 1, 2, 3, 4
MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_STACK_TRACE = 5, 6, 7
MAP_LRU_HASH, MAP_LRU_PERCPU_HASH = 9, 10
MAP_RINGBUF = 27
PERCPU_TYPES = frozenset({MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_LRU_PERCPU_HASH})

_ATTR_SIZE = 128
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class MapInfo(NamedTuple):
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


class ProgInfo(NamedTuple):
    type: int
    id: int
    name: str


@cache
def _nr() -> int:
    try:
        return SYS_BPF[platform.machine()]
    except KeyError:
        raise OSError(f"bpf(2): unknown architecture {platform.machine()}") from None


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(cmd, attr, sizeof attr); raises OSError(errno) on failure."""
    ret = _libc.syscall(_nr(), cmd, attr, _ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _attr(fmt: str, *values: int | bytes) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def lookup(fd: int, key: int, value: int) -> None:
    bpf(MAP_LOOKUP_ELEM, _attr("=IIQQQ", fd, 0, key, value, 0))


def update(fd: int, key: int, value: int, flags: int = 0) -> None:
    bpf(MAP_UPDATE_ELEM, _attr("=IIQQQ", fd, 0, key, value, flags))


def delete(fd: int, key: int) -> None:
    bpf(MAP_DELETE_ELEM, _attr("=IIQ", fd, 0, key))


def next_key(fd: int, key: int | None, out: int) -> bool:
    """Write the key after ``key`` (the first when None) at ``out``; False at the end."""
    try:
        bpf(MAP_GET_NEXT_KEY, _attr("=IIQQ", fd, 0, key or 0, out))
    except OSError as exc:
        if exc.errno == 2:          # ENOENT: no more keys
            return False
        raise
    return True


def lookup_and_delete_batch(fd: int, in_batch: int | None, out_batch: int, keys: int,
                            values: int, count: int) -> tuple[int, bool]:
    """One BPF_MAP_LOOKUP_AND_DELETE_BATCH call: (entries returned, more left)."""
    attr = _attr("=QQQQIIQQ", in_batch or 0, out_batch, keys, values, count, fd, 0, 0)
    try:
        bpf(MAP_LOOKUP_AND_DELETE_BATCH, attr)
    except OSError as exc:
        if exc.errno == 2:          # ENOENT: this call reached the end
            return struct.unpack_from("=I", attr, 32)[0], False
        raise
    return struct.unpack_from("=I", attr, 32)[0], True


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int,
               name: bytes) -> int:
    """A new map's fd (BPF_MAP_CREATE, no BTF); ``name`` is cut to 15 bytes."""
    return bpf(MAP_CREATE, _attr("=IIIIIII16s", map_type, key_size, value_size, max_entries,
                                 flags, 0, 0, name[:15]))


def prog_load(prog_type: int, insns: bytes, license: bytes, kern_version: int, name: bytes,
              log_size: int = 0) -> tuple[int, str]:
    """BPF_PROG_LOAD: (fd, "") or (-errno, the verifier's log when ``log_size``)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _attr("=IIQQIIQII16s", prog_type, len(insns) // 8, ctypes.addressof(code),
                 ctypes.addressof(lic), 1 if log else 0, log_size,
                 ctypes.addressof(log) if log else 0, kern_version, 0, name[:15])
    try:
        return bpf(PROG_LOAD, attr), ""
    except OSError as exc:
        text = log.value.decode("utf-8", "replace") if log is not None else ""
        return -(exc.errno or 1), text


def raw_tracepoint_open(name: bytes, prog_fd: int) -> int:
    buf = ctypes.create_string_buffer(name)
    return bpf(RAW_TRACEPOINT_OPEN, _attr("=QI", ctypes.addressof(buf), prog_fd))


def map_info(fd: int) -> MapInfo:
    info = ctypes.create_string_buffer(88)
    bpf(OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, len(info), addressof_buf(info)))
    t, i, ks, vs, me, fl = struct.unpack_from("=6I", info, 0)
    name = info.raw[24:40].split(b"\0", 1)[0].decode("ascii", "replace")
    return MapInfo(t, i, ks, vs, me, fl, name)


def prog_info(fd: int) -> ProgInfo:
    info = ctypes.create_string_buffer(80)
    bpf(OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, len(info), addressof_buf(info)))
    t, i = struct.unpack_from("=II", info, 0)
    name = info.raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")
    return ProgInfo(t, i, name)


def addressof_buf(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


def cpu_list(which: str) -> list[int]:
    """The CPUs of ``/sys/devices/system/cpu/<which>`` (``possible``,
    ``online``), a kernel cpulist such as ``0-3,6``."""
    with open(f"/sys/devices/system/cpu/{which}") as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


@cache
def possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU value count of per-CPU maps)."""
    return max(cpu_list("possible")) + 1

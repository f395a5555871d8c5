"""Uprobes attached by the agent itself: ``perf_event_open`` on the uprobe
PMU (config1 = path, config2 = file offset, config bit ``retprobe`` for a
return probe) + ``PERF_EVENT_IOC_SET_BPF`` with a program fd the compiler
child loaded. No tracefs entry is created; closing the fd detaches."""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
from functools import cache

SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PMU_DIR = "/sys/bus/event_source/devices"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to config2 and beyond (PERF_ATTR_SIZE_VER8 = 128)."""

    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
                ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("config1", ctypes.c_uint64),
                ("config2", ctypes.c_uint64), ("_rest", ctypes.c_uint8 * 56)]


@cache
def uprobe_pmu() -> tuple[int, int]:
    """(PMU type, retprobe bit) of the uprobe PMU."""
    with open(f"{PMU_DIR}/uprobe/type") as f:
        pmu = int(f.read())
    with open(f"{PMU_DIR}/uprobe/format/retprobe") as f:
        bit = int(f.read().strip().split(":", 1)[1])
    return pmu, bit


def perf_event_open(attr: PerfEventAttr, pid: int, cpu: int) -> int:
    nr = SYS_PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise OSError(f"perf_event_open: unknown architecture {platform.machine()}")
    fd = _libc.syscall(nr, ctypes.byref(attr), pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open: {os.strerror(err)}")
    return int(fd)


def attach_uprobe(prog_fd: int, path: str, offset: int, *, pid: int = -1,
                  retprobe: bool = False) -> int:
    """A uprobe (or uretprobe) at ``offset`` in the file at ``path`` running
    ``prog_fd``; ``pid`` -1 probes every process mapping the file (the BPF
    program runs on every CPU whatever the event's cpu). Returns the fd."""
    pmu, bit = uprobe_pmu()
    name = ctypes.create_string_buffer(os.fsencode(path))
    attr = PerfEventAttr(type=pmu, size=128, sample_period=1, wakeup_events=1,
                         config=(1 << bit) if retprobe else 0,
                         config1=ctypes.addressof(name), config2=offset)
    fd = perf_event_open(attr, pid, 0 if pid < 0 else -1)
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return fd

"""Perf events running BPF programs, opened without BCC.

Uprobes attached by the agent itself: ``perf_event_open`` on the uprobe
PMU (config1 = path, config2 = file offset, config bit ``retprobe`` for a
return probe) + ``PERF_EVENT_IOC_SET_BPF`` with a program fd the compiler
child loaded. No tracefs entry is created; closing the fd detaches.
Tracepoints (id read from tracefs) and the per-CPU cpu-clock sampler, as
BCC's ``attach_tracepoint``/``attach_perf_event`` open them."""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
from functools import cache

from telegen.bpf import syscall as sc

SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PMU_DIR = "/sys/bus/event_source/devices"
PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT = 1, 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_SAMPLE_RAW = 1 << 10
ATTR_FREQ = 1 << 10                 # perf_event_attr.freq (bit 10 of the flags word)
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

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
    return _set_bpf(perf_event_open(attr, pid, 0 if pid < 0 else -1), prog_fd)


def _set_bpf(fd: int, prog_fd: int) -> int:
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def tracepoint_id(category: str, event: str) -> int:
    for root in TRACEFS:
        try:
            with open(f"{root}/events/{category}/{event}/id") as f:
                return int(f.read())
        except FileNotFoundError:
            continue
    raise OSError(f"tracepoint {category}:{event} not found in {' or '.join(TRACEFS)}")


def attach_tracepoint(prog_fd: int, category: str, event: str) -> int:
    """``prog_fd`` on a tracepoint (every CPU); returns the perf event fd."""
    attr = PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=128,
                         config=tracepoint_id(category, event), sample_period=1,
                         sample_type=PERF_SAMPLE_RAW, wakeup_events=1)
    return _set_bpf(perf_event_open(attr, -1, 0), prog_fd)


def attach_cpu_clock(prog_fd: int, sample_freq: int) -> list[tuple[int, int]]:
    """``prog_fd`` on a cpu-clock event of ``sample_freq`` Hz on each online
    CPU (every process); returns (cpu, perf event fd) pairs."""
    fds: list[tuple[int, int]] = []
    try:
        for cpu in sc.cpu_list("online"):
            attr = PerfEventAttr(type=PERF_TYPE_SOFTWARE, size=128,
                                 config=PERF_COUNT_SW_CPU_CLOCK, sample_period=sample_freq,
                                 flags=ATTR_FREQ)
            fds.append((cpu, _set_bpf(perf_event_open(attr, -1, cpu), prog_fd)))
    except OSError:
        for _, fd in fds:
            os.close(fd)
        raise
    return fds

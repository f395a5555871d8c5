"""When a process started: ``starttime`` of ``/proc/PID/stat`` (clock ticks
since boot) and the boot time of ``/proc/stat``. A (pid, start) pair names
one process for good: a reused pid has another start."""

from __future__ import annotations

import os

from telegen.procinfo.procfs import PROC, read_file, read_text

_STARTTIME = 19          # field 22 of stat, counted after the ")" closing comm


def parse_start_ticks(stat_text: str) -> int | None:
    """``starttime`` of a ``/proc/PID/stat`` text; None when malformed. The
    fields are counted after the last ")": comm may hold spaces and ")"."""
    rest = stat_text.rpartition(")")[2].split()
    try:
        return int(rest[_STARTTIME])
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int, proc: str = PROC) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when it is gone."""
    text = read_file(pid, "stat", proc)
    return parse_start_ticks(text) if text is not None else None


def boot_time_ns(proc: str = PROC) -> int:
    """Unix ns the host booted at (``btime``); 0 when unknown."""
    for line in (read_text(f"{proc}/stat") or "").splitlines():
        if line.startswith("btime "):
            try:
                return int(line.split()[1]) * 1_000_000_000
            except (IndexError, ValueError):
                return 0
    return 0


def ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def start_time_ns(pid: int, proc: str = PROC, boot_ns: int | None = None) -> int:
    """Unix ns ``pid`` started at; 0 when unknown. ``boot_ns`` saves reading
    the boot time again in a scan of many processes."""
    ticks = start_ticks(pid, proc)
    if ticks is None:
        return 0
    base = boot_time_ns(proc) if boot_ns is None else boot_ns
    return base + ticks * 1_000_000_000 // ticks_per_second()

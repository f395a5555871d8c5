"""Host-wide facts the kernel publishes under ``/proc``: its symbols, the
perf_event policy, mounted filesystems."""

from __future__ import annotations

from telegen.procinfo.procfs import KALLSYMS, PROC, read_text

__all__ = ["KALLSYMS", "PERF_EVENT_PARANOID", "mount_points", "perf_event_paranoid"]

PERF_EVENT_PARANOID = f"{PROC}/sys/kernel/perf_event_paranoid"


def perf_event_paranoid(path: str = PERF_EVENT_PARANOID) -> int | None:
    """``kernel.perf_event_paranoid``; None when it cannot be read (no
    CONFIG_PERF_EVENTS)."""
    try:
        return int((read_text(path) or "").strip())
    except ValueError:
        return None


def mount_points(proc: str = PROC) -> set[str]:
    """Where filesystems are mounted in the agent's mount namespace."""
    points = set()
    for line in (read_text(f"{proc}/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) > 1:
            points.add(fields[1])
    return points

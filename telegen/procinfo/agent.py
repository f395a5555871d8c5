"""Facts about the agent's own process (``/proc/self``): its capabilities,
resident memory, descriptors, the kernel's vDSO image it maps, and the child
processes it runs for its own work."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from telegen.procinfo.maps import read_maps
from telegen.procinfo.procfs import PROC, SELF, process_file, read_file

_PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_cap_eff(status_text: str) -> int:
    """The effective capability set (``CapEff``) of a ``/proc/PID/status``
    text, as a bit mask; 0 when it is missing or malformed."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return 0
    return 0


def cap_eff(proc: str = PROC) -> int:
    """The agent's effective capabilities (0 when unknown)."""
    return parse_cap_eff(read_file(SELF, "status", proc) or "")


def _statm_bytes(field: int, proc: str) -> int:
    try:
        return int((read_file(SELF, "statm", proc) or "").split()[field]) * _PAGE
    except (ValueError, IndexError):
        return 0


def rss_bytes(proc: str = PROC) -> int:
    """The agent's resident memory now, in bytes (``statm``); 0 when unknown."""
    return _statm_bytes(1, proc)


def address_space_bytes(proc: str = PROC) -> int:
    """The agent's virtual memory size now (``VmSize``: what ``RLIMIT_AS``
    bounds), in bytes; 0 when unknown."""
    return _statm_bytes(0, proc)


def resident_by_mapping(proc: str = PROC) -> dict[int, int]:
    """Resident bytes of each of the agent's mappings (``smaps`` ``Rss``: the
    pages in its own page tables, not the page cache), by start address."""
    out: dict[int, int] = {}
    start = -1
    for line in (read_file(SELF, "smaps", proc) or "").splitlines():
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):
            try:
                start = int(head.partition("-")[0], 16)
            except ValueError:
                start = -1
        elif head == "Rss:" and start >= 0:
            try:
                out[start] = int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                pass
    return out


def fd_info(fd: int, key: str, proc: str = PROC) -> str | None:
    """The value of ``key`` in ``/proc/self/fdinfo/FD`` (``prog_id`` of a BPF
    program's descriptor...); None when absent."""
    for line in (read_file(SELF, f"fdinfo/{int(fd)}", proc) or "").splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    return None


def vdso_span(proc: str = PROC) -> tuple[int, int] | None:
    """(start, end) of the ``[vdso]`` the agent maps; None when it has none."""
    for e in read_maps(SELF, proc) or ():
        if e.path == "[vdso]":
            return e.start, e.end
    return None


def read_own_memory(address: int, size: int, proc: str = PROC) -> bytes:
    """``size`` bytes of the agent's own memory at ``address`` (fewer when
    the range ends early). Raises ``OSError``."""
    with open(process_file(SELF, "mem", proc), "rb") as mem:
        mem.seek(address)
        return mem.read(size)


# -- the agent's own child processes ----------------------------------------------------
# Index builders, c++filt, the BPF compiler: the agent's work, not the host's. Profiled,
# each would be first sight of a Python, LLVM or symbolic binary (tables and indexes
# built for the agent's own tools, by more children) and their samples unwound and
# symbolized by the agent. Spawners say when a child starts and ends; the ebpf receiver
# keeps them in its BPF ``excluded`` map.

_children: set[int] = set()
_child_listeners: list[Callable[[int, bool], None]] = []
_children_lock = threading.Lock()


def child_started(pid: int) -> None:
    """``pid`` is a child the agent started for its own work."""
    with _children_lock:
        _children.add(pid)
        listeners = list(_child_listeners)
    for listener in listeners:
        listener(pid, True)


def child_ended(pid: int) -> None:
    """The child ``pid`` exited (and was reaped: the pid may be reused)."""
    with _children_lock:
        if pid not in _children:
            return
        _children.discard(pid)
        listeners = list(_child_listeners)
    for listener in listeners:
        listener(pid, False)


def own_children() -> set[int]:
    with _children_lock:
        return set(_children)


def on_children(listener: Callable[[int, bool], None]) -> Callable[[], None]:
    """Call ``listener(pid, started)`` for every child from now on (and once for
    each running now); returns the function that stops it."""
    with _children_lock:
        _child_listeners.append(listener)
        running = list(_children)
    for pid in running:
        listener(pid, True)

    def stop() -> None:
        with _children_lock:
            if listener in _child_listeners:
                _child_listeners.remove(listener)
    return stop

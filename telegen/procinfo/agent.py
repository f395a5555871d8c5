"""Facts about the agent's own process (``/proc/self``): its capabilities,
resident memory, descriptors and the kernel's vDSO image it maps."""

from __future__ import annotations

import os

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

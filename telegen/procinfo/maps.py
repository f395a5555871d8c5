"""Parse ``/proc/PID/maps``."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MapEntry:
    start: int
    end: int
    perms: str          # e.g. "r-xp"
    offset: int         # file offset of ``start``
    dev: str
    inode: int
    path: str           # "" for anonymous memory; "[vdso]", "[stack]", ...

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    @property
    def deleted(self) -> bool:
        return self.path.endswith(" (deleted)")


def parse_maps(text: str) -> list[MapEntry]:
    """Entries in address order; malformed lines are skipped."""
    out: list[MapEntry] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, _, hi = parts[0].partition("-")
            entry = MapEntry(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16),
                             parts[3], int(parts[4]), parts[5].strip() if len(parts) > 5 else "")
        except ValueError:
            continue
        out.append(entry)
    return out


def mapped_file(pid: int, file: str, start: int, *, proc: str = "/proc") -> str | None:
    """A path this agent can open for the file ``pid`` maps at ``start``:
    through the process's root (its mount namespace: containers), else
    through ``/proc/PID/map_files`` — the mapping itself, which still reaches
    a file deleted since (an upgraded binary) or one that never had a path
    (a memfd executable). None when neither opens."""
    if not file or file.startswith("["):
        return None
    file = file.removesuffix(" (deleted)")
    if pid:
        rooted = f"{proc}/{pid}/root{file}"
        if os.path.isfile(rooted):
            return rooted
        entries = glob.glob(f"{proc}/{pid}/map_files/{start:x}-*")
        if entries and os.path.isfile(entries[0]):
            return entries[0]
    return file if os.path.isfile(file) else None

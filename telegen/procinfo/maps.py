"""Parse ``/proc/PID/maps``."""

from __future__ import annotations

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

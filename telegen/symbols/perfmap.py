"""JIT symbols from ``/tmp/perf-PID.map`` (``START SIZE name`` in hex, one per line).

Written by Node ``--perf-basic-prof``, Python 3.12 ``-X perf`` and JVM perf-map
agents. The file only grows while the process runs: new lines are read from
where the last read stopped whenever a look-up misses and the file got bigger.
Later entries win over earlier ones for the same range (code gets re-JITted).
"""

from __future__ import annotations

import os
from bisect import bisect_right, insort


class PerfMap:
    def __init__(self, path: str) -> None:
        self.path = path
        self._pos = 0
        self._inode = -1
        self._partial = b""
        self._starts: list[int] = []
        self._entries: dict[int, tuple[int, str]] = {}   # start -> (end, name)
        self.refresh()

    def __len__(self) -> int:
        return len(self._starts)

    def refresh(self) -> bool:
        """Read what was appended since the last read; True when anything was."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if st.st_ino != self._inode or st.st_size < self._pos:   # replaced: start over
            self._inode, self._pos, self._partial = st.st_ino, 0, b""
            self._starts, self._entries = [], {}
        if st.st_size == self._pos:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(self._pos)
            data = self._partial + fh.read()
        self._pos = st.st_size
        lines = data.split(b"\n")
        self._partial = lines.pop()       # an incomplete last line waits for more
        for raw in lines:
            self._add(raw)
        return True

    def _add(self, raw: bytes) -> None:
        parts = raw.split(None, 2)
        if len(parts) < 3:
            return
        try:
            start, size = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            return
        if start not in self._entries:
            insort(self._starts, start)
        self._entries[start] = (start + max(size, 1), parts[2].decode("utf-8", "replace").strip())

    def lookup(self, address: int, *, refresh: bool = True) -> tuple[str, int] | None:
        """(name, start) of the JIT code holding ``address``; re-reads the file on a miss."""
        hit = self._find(address)
        if hit is None and refresh and self.refresh():
            hit = self._find(address)
        return hit

    def _find(self, address: int) -> tuple[str, int] | None:
        i = bisect_right(self._starts, address) - 1
        for _ in range(32):     # an earlier, longer entry may still cover it
            if i < 0:
                return None
            start = self._starts[i]
            end, name = self._entries[start]
            if address < end:
                return name, start
            i -= 1
        return None

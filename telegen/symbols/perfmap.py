"""JIT symbols from ``/tmp/perf-PID.map`` (``START SIZE name`` in hex, one per line).

Written by Node ``--perf-basic-prof``, Python 3.12 ``-X perf`` and JVM perf-map
agents. The file only grows while the process runs: new lines are read from
where the last read stopped whenever a look-up misses and the file got bigger.
Later entries win over earlier ones for the same range (code gets re-JITted).

The file is the profiled process's, so it is not trusted
(:func:`perf_map_for`): only ``/tmp/perf-<pid in its own namespace>.map``
inside the process's root (``/proc/PID/root``, never the host's ``/tmp`` for
a process elsewhere), opened without following symlinks and ``O_NONBLOCK``,
a regular file owned by the process's uid (another user cannot forge names
for it), and at most ``limit`` bytes (a sparse huge file is refused from its
size, unread).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Callable

from telegen.procinfo import PROC, process_root, read_ids
from telegen.untrusted import Refusals, Refused, open_in_root

# ~3.3 MB of memory per MB of map (measured: 64 MiB, 672k entries -> +213 MB RSS)
MAX_PERF_MAP_BYTES = 16 << 20
SOURCE = "perf_map"


class PerfMap:
    def __init__(self, path: str, *, root: str | int = "/", owner: int | None = None,
                 limit: int = MAX_PERF_MAP_BYTES,
                 on_refused: Callable[[Refused], None] | None = None) -> None:
        self.path = path                  # inside ``root``
        self.root = root
        self.owner = owner
        self.limit = limit
        self._on_refused = on_refused
        self.refused: str = ""            # the reason of the last refusal, "" when none
        self.found = False                # opened (and accepted) at least once
        self._pos = 0
        self._inode = -1
        self._partial = b""
        self._starts: list[int] = []
        self._entries: dict[int, tuple[int, str]] = {}   # start -> (end, name)
        self.refresh()

    def __len__(self) -> int:
        return len(self._starts)

    def _refuse(self, exc: Refused) -> bool:
        if exc.reason != self.refused and self._on_refused is not None:
            self._on_refused(exc)         # once per kind of refusal, not per look-up
        self.refused = exc.reason
        return False

    def refresh(self) -> bool:
        """Read what was appended since the last read; True when anything was."""
        try:
            fd = open_in_root(self.root, self.path)
        except Refused as exc:
            return self._refuse(exc)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if self.owner is not None and st.st_uid != self.owner:
                return self._refuse(Refused("wrong_owner", f"{self.path}: uid {st.st_uid}, "
                                                           f"the process runs as {self.owner}"))
            if st.st_ino != self._inode or st.st_size < self._pos:   # replaced: start over
                self._inode, self._pos, self._partial = st.st_ino, 0, b""
                self._starts, self._entries = [], {}
            if st.st_size > self.limit:   # what was read before the cap stays
                return self._refuse(Refused("too_large", f"{self.path}: {st.st_size} bytes > "
                                                         f"limit {self.limit}"))
            self.found, self.refused = True, ""
            if st.st_size == self._pos:
                return False
            data = self._partial + _pread_all(fd, st.st_size - self._pos, self._pos)
        finally:
            os.close(fd)
        self._pos += len(data) - len(self._partial)
        lines = data.split(b"\n")
        self._partial = lines.pop()       # an incomplete last line waits for more
        known = len(self._entries)
        for raw in lines:
            self._add(raw)
        if len(self._entries) != known:   # one sort per read, not one insert per line
            self._starts = sorted(self._entries)
        return True

    @property
    def bytes_read(self) -> int:
        """How much of the file is held (a cache can weigh maps by it)."""
        return self._pos

    def _add(self, raw: bytes) -> None:
        parts = raw.split(None, 2)
        if len(parts) < 3:
            return
        try:
            start, size = int(parts[0], 16), int(parts[1], 16)
        except ValueError:
            return
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


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 20), offset)
        if not chunk:
            break
        parts.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def perf_map_for(pid: int, *, proc: str = PROC, limit: int = MAX_PERF_MAP_BYTES,
                 refusals: Refusals | None = None) -> PerfMap | None:
    """The perf map of process ``pid``: ``/tmp/perf-<nspid>.map`` inside its
    root, owned by its uid. None when it has none (yet); a map that exists
    but is refused is returned (empty), its refusal noted once."""
    ids = read_ids(pid, proc)
    if ids is None:
        return None
    nspid, uid = ids.nspid or pid, ids.uid

    def note(exc: Refused) -> None:
        if refusals is not None:
            refusals.note(SOURCE, exc.reason, f"pid {pid}: {exc.detail}")

    pm = PerfMap(f"/tmp/perf-{nspid}.map", root=process_root(pid, proc), owner=uid, limit=limit,
                 on_refused=note)
    return pm if pm.found or pm.refused else None

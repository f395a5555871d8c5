"""Unwind tables cached by build-id: a bounded in-memory LRU, backed by files
on disk so a table is built once per binary per host, not once per agent run.

Building libc's table takes ~0.8 s (pyelftools); loading it from disk ~1 ms.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from cachetools import LRUCache

from telegen.unwind.build import build_table
from telegen.unwind.table import UnwindTable

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "telegen" / "unwind"


class TableCache:
    """``get(path, build_id)`` → the table of that file (empty if it has no CFI,
    or if it cannot be read). Thread-safe."""

    def __init__(self, maxsize: int = 128, *, cache_dir: Path | str | None = None,
                 disk: bool = True) -> None:
        self._mem: LRUCache[str, UnwindTable] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._disk = disk
        self.built = 0          # tables built from ELF (the expensive path)
        self.loaded = 0         # tables read from the disk cache
        self.failed = 0

    def get(self, path: str, build_id: str) -> UnwindTable:
        key = build_id or f"path:{path}:{_identity(path)}"
        with self._lock:
            hit = self._mem.get(key)
        if hit is not None:
            return hit
        table = self._load(build_id) if build_id and self._disk else None
        if table is None:
            table = self._build(path, build_id)
        with self._lock:
            self._mem[key] = table
        return table

    def _load(self, build_id: str) -> UnwindTable | None:
        f = self._dir / f"{build_id}.unw"
        try:
            data = f.read_bytes()
        except OSError:
            return None
        try:
            source, _, body = data.partition(b"\n")
            table = UnwindTable.from_bytes(body, build_id=build_id, source=source.decode())
        except Exception as exc:
            log.debug("ignoring bad cached unwind table %s: %s", f, exc)
            return None
        self.loaded += 1
        return table

    def _build(self, path: str, build_id: str) -> UnwindTable:
        try:
            table = build_table(path)
        except Exception as exc:
            log.debug("no unwind table for %s: %s", path, exc)
            self.failed += 1
            return UnwindTable(_empty("Q"), _empty("I"), [], [], build_id=build_id)
        self.built += 1
        if build_id and table.build_id == build_id and self._disk:
            self._store(build_id, table)
        return table

    def _store(self, build_id: str, table: UnwindTable) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(table.source.encode() + b"\n" + table.to_bytes())
            os.replace(tmp, self._dir / f"{build_id}.unw")
        except OSError as exc:
            log.debug("cannot store unwind table for %s: %s", build_id, exc)

    @property
    def cache_dir(self) -> Path:
        return self._dir

    def __len__(self) -> int:
        with self._lock:
            return len(self._mem)


def _identity(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "?"
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


def _empty(code: str):  # type: ignore[no-untyped-def]
    from array import array

    return array(code)

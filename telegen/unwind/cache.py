"""Unwind tables cached by build-id: a bounded in-memory LRU, backed by files
on disk so a table is built once per binary per host, not once per agent run.

Building libc's table takes ~0.8 s (pyelftools); loading it from disk ~1 ms.
Files without a build-id (e.g. Rust binaries linked without one, the vDSO
image) are cached too, under a key made of the file's identity (device,
inode, size, mtime), which is the same whichever ``/proc/PID/root`` path the
file is reached through.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from cachetools import LRUCache

from telegen.cachedir import cache_dir
from telegen.unwind.build import build_table
from telegen.unwind.table import UnwindTable

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(cache_dir("unwind"))


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
        key = build_id or _identity_key(path)
        with self._lock:
            hit = self._mem.get(key)
        if hit is not None:
            return hit
        table = self._load(key, build_id) if key and self._disk else None
        if table is None:
            table = self._build(path, build_id, key)
        if key:
            with self._lock:
                self._mem[key] = table
        return table

    def _load(self, key: str, build_id: str) -> UnwindTable | None:
        f = self._dir / f"{key}.unw"
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

    def _build(self, path: str, build_id: str, key: str) -> UnwindTable:
        try:
            table = build_table(path)
        except Exception as exc:
            log.debug("no unwind table for %s: %s", path, exc)
            self.failed += 1
            return UnwindTable(_empty("Q"), _empty("I"), [], [], build_id=build_id)
        self.built += 1
        # a build-id mismatch means the file changed since the maps were read
        if key and self._disk and (not build_id or table.build_id == build_id):
            self._store(key, table)
        return table

    def _store(self, key: str, table: UnwindTable) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(table.source.encode() + b"\n" + table.to_bytes())
            os.replace(tmp, self._dir / f"{key}.unw")
        except OSError as exc:
            log.debug("cannot store unwind table for %s: %s", key, exc)

    @property
    def cache_dir(self) -> Path:
        return self._dir

    def __len__(self) -> int:
        with self._lock:
            return len(self._mem)


def _identity_key(path: str) -> str:
    """Cache key of a file without a build-id: its identity, not its path
    ("" when it cannot be stat'ed: such a table is not cached)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    ident = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()
    return "file-" + hashlib.sha1(ident).hexdigest()


def _empty(code: str):  # type: ignore[no-untyped-def]
    from array import array

    return array(code)

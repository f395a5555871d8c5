"""Unwind tables cached by build-id: a bounded in-memory LRU, backed by files
on disk so a table is built once per binary per host, not once per agent run.

Building libc's table takes ~0.8 s (pyelftools); loading it from disk ~1 ms.

Keys are ``<build-id>-<content digest>`` (:mod:`telegen.symbols.fileid`), in
memory and in the disk file's name: a binary that copies libc's build-id
gets a table of its own, never libc's — and libc never gets its table, in
this run or after a restart. Files without a build-id (Rust binaries linked
without one, the vDSO image) are keyed by their digest alone. Build-ids that
are not hex are ignored (they would become part of a path).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cachetools import LRUCache

from telegen.cachedir import cache_dir
from telegen.procinfo.elfheaders import valid_build_id
from telegen.procinfo.maps import MappedFile, open_host_file
from telegen.symbols.budget import ParseLimits, Rejected
from telegen.symbols.fileid import ContentKeys
from telegen.symbols.types import CounterLike
from telegen.untrusted import Refusals, Refused
from telegen.unwind.build import CFI_LIMITS, build_table
from telegen.unwind.table import UnwindTable

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(cache_dir("unwind"))


class TableCache:
    """``get(file, build_id)`` → the table of that file (empty if it has no CFI,
    if it cannot be read, or if it was over its parse budget — then counted in
    :attr:`rejected`). ``file`` is an open :class:`MappedFile` (a profiled
    process's file) or a host path. Thread-safe."""

    def __init__(self, maxsize: int = 128, *, cache_dir: Path | str | None = None,
                 disk: bool = True, limits: ParseLimits = CFI_LIMITS,
                 refusals: Refusals | None = None,
                 rejected_counter: Callable[[str], CounterLike] | None = None) -> None:
        self._mem: LRUCache[str, UnwindTable] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._disk = disk
        self._limits = limits
        self.refusals = refusals or Refusals(None, log)
        self._rejected_counter = rejected_counter
        self.content_keys = ContentKeys(max(1024, maxsize * 8))
        self.built = 0          # tables built from ELF (the expensive path)
        self.loaded = 0         # tables read from the disk cache
        self.failed = 0
        self.rejected: dict[str, int] = {}   # files over their budget, by reason

    def get(self, file: MappedFile | str, build_id: str) -> UnwindTable:
        if build_id and not valid_build_id(build_id):
            self.refusals.note("build_id", "bad_build_id", repr(build_id[:80]))
            build_id = ""
        if isinstance(file, str):
            try:
                with MappedFile(open_host_file(file), file, "") as host:
                    return self._get(host, build_id)
            except (OSError, Refused) as exc:
                log.debug("no unwind table for %s: %s", file, exc)
                self.failed += 1
                return _empty_table(build_id)
        return self._get(file, build_id)

    def known(self, build_id: str) -> UnwindTable | None:
        """The table in memory for ``build_id`` when the file itself cannot be
        opened any more (its process exited before its copies were unwound),
        provided one content only was ever seen with that build-id."""
        if not build_id or not valid_build_id(build_id):
            return None
        key = self.content_keys.unique(build_id)
        if key is None:
            return None
        with self._lock:
            return self._mem.get(key.replace(":", "-"))

    def _get(self, file: MappedFile, build_id: str) -> UnwindTable:
        key, mismatch = self.content_keys.key(build_id, file.fd, file.identity)
        key = key.replace(":", "-")
        if mismatch:
            self.refusals.note("build_id", "content_mismatch",
                               f"{file.path}: other content than the first {build_id}")
        with self._lock:
            hit = self._mem.get(key)
        if hit is not None:
            return hit
        table = self._load(key, build_id) if self._disk else None
        if table is None:
            table = self._build(file, build_id, key)
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

    def _build(self, file: MappedFile, build_id: str, key: str) -> UnwindTable:
        try:
            table = build_table(file.fd, name=file.path, limits=self._limits)
        except Rejected as exc:       # over its budget: an empty table, kept (not retried)
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            if self._rejected_counter is not None:
                self._rejected_counter(exc.reason).add()
            self.refusals.note("unwind_object", exc.reason, f"{file.path}: skipped")
            return _empty_table(build_id)
        except Exception as exc:
            log.debug("no unwind table for %s: %s", file.path, exc)
            self.failed += 1
            return _empty_table(build_id)
        self.built += 1
        # a build-id mismatch means the file changed since the maps were read
        if self._disk and (not build_id or table.build_id == build_id):
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


def _empty_table(build_id: str) -> UnwindTable:
    return UnwindTable(_empty("Q"), _empty("I"), [], [], build_id=build_id)


def _empty(code: str):  # type: ignore[no-untyped-def]
    from array import array

    return array(code)

"""Unwind tables cached by build-id and content: a bounded in-memory LRU,
backed by files on disk so a table is built once per binary per host, not
once per agent run.

Building libc's table takes ~0.06 s (:mod:`telegen.unwind.cfi`); loading it
from disk is an ``mmap`` (the rows are used in place, see
:mod:`telegen.unwind.table`), well under a millisecond.

Keys are ``<build-id>-<content digest>`` (:mod:`telegen.symbols.fileid`), in
memory and in the disk file's name (and header): a binary that copies
libc's build-id gets a table of its own, never libc's — and libc never gets
its table, in this run or after a restart. Files without a build-id (Rust
binaries linked without one, the vDSO image) are keyed by their digest
alone. Build-ids that are not hex are ignored (they would become part of a
path). The directory is capped in bytes (``max_disk_bytes``): least recently
used tables are deleted first.

Two ways in:

- :meth:`TableCache.get` builds in the calling thread when the table is
  neither in memory nor on disk (under a :class:`~telegen.symbols.budget.Budget`);
- :meth:`TableCache.lookup` never waits: it returns the table when it is in
  memory (or its file is known on disk), else queues the file for the
  background thread — which hashes it and has it built by the builder child
  (:mod:`telegen.unwind.builder`: ``nice 19``, CPU and address-space limits
  per object) — and returns None: the caller uses frame pointers meanwhile.
  :attr:`generation` changes whenever a queued table becomes ready.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cachetools import LRUCache

from telegen.cachedir import cache_dir
from telegen.index.header import enforce_cap, map_file, write_atomic
from telegen.procinfo.elfheaders import SHT_NOBITS, read_headers, valid_build_id
from telegen.procinfo.maps import MappedFile, open_host_file
from telegen.symbols.budget import ParseLimits, Rejected
from telegen.symbols.fileid import ContentKeys, Identity
from telegen.symbols.types import CounterLike
from telegen.untrusted import Refusals, Refused
from telegen.unwind.build import build_table, cfi_limits
from telegen.unwind.builder import IDLE_EXIT_S, BuilderChild, drop_page_cache
from telegen.unwind.table import UnwindTable

log = logging.getLogger(__name__)
SUFFIX = ".unw"
DEFAULT_DISK_BYTES = 256 << 20
BUILD_MEMORY_BYTES = 256 << 20     # RLIMIT_AS of a build: the builder's size + this
MAX_QUEUED = 256                   # files waiting for the builder (each holds a descriptor)
# Small CFI is decoded at once in the caller's thread (under its Budget): libc's
# 150 KiB take ~0.05 s, less than the round trip through the child, and the
# samples of a new process's first window keep their stacks. Bigger sections
# (libpython 320 KiB, libjvm 1.4 MiB) and big files (hashed whole) go to the child.
INLINE_CFI_BYTES = 256 << 10
INLINE_FILE_BYTES = 16 << 20   # hashed whole (SHA-256) first: ~25 ms
# ... but at most this long per window (new_window()): a whole host seen for the
# first time has hundreds of small binaries; past it, they go to the child too
INLINE_S_PER_WINDOW = 0.5
# A table's pages resident in the agent are those its look-ups touched since the
# last trim (a touch maps a whole page-cache folio: up to 2 MB on ext4, kernel
# 6.18, for a file just written — hence drop_page_cache after each write); they
# are given back about every window (the unwinder memoizes rules per pc: a steady
# workload faults a few pages back in, from the page cache)
TRIM_EVERY_S = 10.0


def default_cache_dir() -> Path:
    return Path(cache_dir("unwind"))


class TableCache:
    """``get(file, build_id)`` → the table of that file (empty if it has no CFI,
    if it cannot be read, or if it was over its parse budget — then counted in
    :attr:`rejected`). ``file`` is an open :class:`MappedFile` (a profiled
    process's file) or a host path. Thread-safe."""

    def __init__(self, maxsize: int = 128, *, cache_dir: Path | str | None = None,
                 disk: bool = True, limits: ParseLimits | None = None,
                 refusals: Refusals | None = None,
                 rejected_counter: Callable[[str], CounterLike] | None = None,
                 max_disk_bytes: int = DEFAULT_DISK_BYTES,
                 inline_cfi_bytes: int = INLINE_CFI_BYTES,
                 builder_idle_s: float = IDLE_EXIT_S) -> None:
        self._mem: LRUCache[str, UnwindTable] = LRUCache(maxsize)
        self._maps: dict[str, mmap.mmap] = {}   # key -> the file mapping its table uses
        self.trim_every_s = TRIM_EVERY_S
        self._trimmed_at = time.monotonic()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._disk = disk
        self._limits = limits or cfi_limits()
        self.max_disk_bytes = max_disk_bytes
        self.inline_cfi_bytes = inline_cfi_bytes
        self.builder_idle_s = builder_idle_s   # the builder child ends after this long idle
        self.inline_s_per_window = INLINE_S_PER_WINDOW
        self._inline_s = 0.0    # spent on inline builds since new_window()
        self.refusals = refusals or Refusals(None, log)
        self._rejected_counter = rejected_counter
        self.content_keys = ContentKeys(max(1024, maxsize * 8))
        self._keys: LRUCache[Identity, str] = LRUCache(max(1024, maxsize * 8))
        self.built = 0          # tables built from ELF (the expensive path)
        self.built_inline = 0   # of which in the caller's thread (small CFI)
        self.loaded = 0         # tables read from the disk cache
        self.failed = 0
        self.evicted = 0        # table files deleted by the disk cap
        self.rejected: dict[str, int] = {}   # files over their budget, by reason
        self.build_cpu_s = 0.0  # CPU of the builder child's workers
        self.build_peak_rss = 0  # the largest worker's peak RSS (bytes)
        self.generation = 0     # changes when a queued table is ready
        # (file identity, the file, build-id), "start" (the child, ahead), None (stop)
        self._queue: queue.Queue[tuple[Identity, MappedFile, str] | str | None] = queue.Queue()
        self._queued: set[Identity] = set()
        self._thread: threading.Thread | None = None
        self._child: BuilderChild | None = None
        self._scratch: Path | None = None

    # -- synchronous --------------------------------------------------------------------
    def get(self, file: MappedFile | str, build_id: str) -> UnwindTable:
        build_id = self._checked(build_id)
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

    def _checked(self, build_id: str) -> str:
        if build_id and not valid_build_id(build_id):
            self.refusals.note("build_id", "bad_build_id", repr(build_id[:80]))
            return ""
        return build_id

    def _key(self, file: MappedFile, build_id: str) -> str:
        key, mismatch = self.content_keys.key(build_id, file.fd, file.identity)
        key = key.replace(":", "-")
        if mismatch:
            self.refusals.note("build_id", "content_mismatch",
                               f"{file.path}: other content than the first {build_id}")
        with self._lock:
            self._keys[file.identity] = key
        return key

    def _get(self, file: MappedFile, build_id: str) -> UnwindTable:
        key = self._key(file, build_id)
        table = self._cached(key, build_id)
        if table is None:
            table = self._build(file, build_id, key)
            with self._lock:
                self._mem[key] = table
        return table

    def _cached(self, key: str, build_id: str) -> UnwindTable | None:
        with self._lock:
            hit = self._mem.get(key)
        if hit is not None or not self._disk:
            return hit
        table = self._load(self._dir / f"{key}{SUFFIX}", key, build_id)
        if table is not None:
            self.loaded += 1
            with self._lock:
                self._mem[key] = table
        return table

    def _load(self, path: Path, key: str, build_id: str) -> UnwindTable | None:
        try:
            mapped = map_file(path)
        except (OSError, ValueError):
            return None
        _small_pages(mapped)
        try:
            table = UnwindTable.from_bytes(mapped, key=key, build_id=build_id)
        except ValueError as exc:
            log.debug("ignoring bad cached unwind table %s: %s", path, exc)
            return None
        _drop_resident(mapped)     # the check read every rule index: none is needed yet
        try:
            mapped.madvise(mmap.MADV_RANDOM)    # a look-up's touch: one page, no readahead
        except (OSError, ValueError):
            pass
        with self._lock:
            self._maps[key] = mapped
        return table

    def trim(self) -> int:
        """Give the resident pages of every mapped table back (``MADV_DONTNEED``
        on read-only file mappings: a later look-up faults the few pages it
        needs back in from the page cache). Returns the number of tables trimmed."""
        with self._lock:
            for key in [k for k in self._maps if k not in self._mem]:
                del self._maps[key]         # evicted: the table's views keep it alive
            maps = list(self._maps.values())
        for mapped in maps:
            _drop_resident(mapped)
        self._trimmed_at = time.monotonic()
        return len(maps)

    def _build(self, file: MappedFile, build_id: str, key: str) -> UnwindTable:
        try:
            table = build_table(file.fd, name=file.path, limits=self._limits)
        except Rejected as exc:       # over its budget: an empty table, kept (not retried)
            self._reject(exc.reason, file.path)
            return _empty_table(build_id)
        except Exception as exc:
            log.debug("no unwind table for %s: %s", file.path, exc)
            self.failed += 1
            return _empty_table(build_id)
        self.built += 1
        # a build-id mismatch means the file changed since the maps were read
        if self._disk and (not build_id or table.build_id == build_id):
            try:
                drop_page_cache(write_atomic(self._dir, f"{key}{SUFFIX}", table.to_bytes(key)))
                self._cap()
            except OSError as exc:
                log.debug("cannot store unwind table for %s: %s", key, exc)
        return table

    def _reject(self, reason: str, path: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._rejected_counter is not None:
            self._rejected_counter(reason).add()
        self.refusals.note("unwind_object", reason, f"{path}: skipped")

    def _cap(self) -> None:
        _kept, deleted = enforce_cap(self._dir, self.max_disk_bytes, SUFFIX)
        self.evicted += deleted

    # -- never waiting ------------------------------------------------------------------
    def lookup(self, file: MappedFile, build_id: str) -> UnwindTable | None:
        """The table when it is ready (memory, or a file on disk) or small
        enough to build at once; else None, and the file is queued for the
        builder child (once)."""
        build_id = self._checked(build_id)
        ident = file.identity
        with self._lock:
            key = self._keys.get(ident)
        if key is not None:
            table = self._cached(key, build_id)
            if table is not None:
                return table
        if self._inline_s < self.inline_s_per_window and self._small(file):
            built, t0 = self.built, time.monotonic()
            table = self._get(file, build_id)
            self._inline_s += time.monotonic() - t0
            self.built_inline += self.built - built
            return table
        with self._lock:
            if ident in self._queued or len(self._queued) >= MAX_QUEUED:
                return None
            self._queued.add(ident)
            self._start()
        self._queue.put((ident, MappedFile(os.dup(file.fd), file.path, file.root), build_id))
        return None

    def new_window(self) -> None:
        """A new window: inline builds may take INLINE_S_PER_WINDOW again;
        every :attr:`trim_every_s`, the mapped tables' pages are given back
        (:meth:`trim`)."""
        self._inline_s = 0.0
        if time.monotonic() - self._trimmed_at >= self.trim_every_s:
            self.trim()

    def _small(self, file: MappedFile) -> bool:
        """Whether the file's CFI is small enough to decode in the caller's
        thread (an unreadable ELF is too: it fails at once)."""
        if file.identity[2] > INLINE_FILE_BYTES:
            return False
        try:
            headers = read_headers(file.fd, file.identity[2])
        except (OSError, Refused):
            return True
        sizes = [s.data_size for s in headers.sections
                 if s.name in (".eh_frame", ".debug_frame") and s.type != SHT_NOBITS]
        return all(size <= self.inline_cfi_bytes for size in sizes)

    def start_builder(self) -> None:
        """Start the background thread and the builder child now (the child's
        start-up, ~0.5 s of CPU, is then not paid by the first table)."""
        with self._lock:
            self._start()
        self._queue.put("start")

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` for every queued table; meanwhile the
        builder runs at the agent's own priority (:meth:`BuilderChild.boost`),
        not at 19 behind a busy host's programs. True when none is pending."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if not self._queued:
                return True
        child = self._child
        boosted = child is not None and child.boost(True)
        try:
            with self._lock:
                while self._queued and (left := deadline - time.monotonic()) > 0:
                    self._ready.wait(left)
                return not self._queued
        finally:
            if boosted and child is not None:
                child.boost(False)

    @property
    def pending(self) -> int:
        """Files queued for, or being built by, the builder child."""
        with self._lock:
            return len(self._queued)

    def _start(self) -> None:
        if self._thread is None:
            self._child = BuilderChild(cpu_s=self._limits.object_cpu_s,
                                       memory_bytes=BUILD_MEMORY_BYTES,
                                       idle_s=self.builder_idle_s)
            self._thread = threading.Thread(target=self._run, name="unwind-tables",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=max(0.01, self.builder_idle_s / 3))
            except queue.Empty:                     # nothing to build: an idle child goes
                if self._child is not None:
                    self._child.close_if_idle()
                continue
            if item is None:
                return
            if isinstance(item, str):               # "start"
                try:
                    if self._child is not None:
                        self._child.start()
                except OSError as exc:
                    log.warning("cannot start the unwind-table builder: %s", exc)
                continue
            ident, file, build_id = item
            try:
                with file:
                    self._background(file, build_id)
            except Exception as exc:
                log.warning("building the unwind table of %s: %s", file.path, exc)
            finally:
                with self._lock:
                    self._queued.discard(ident)
                    self.generation += 1
                    self._ready.notify_all()

    def _background(self, file: MappedFile, build_id: str) -> None:
        path = file.path
        key = self._key(file, build_id)
        if self._cached(key, build_id) is not None:
            return
        out = self._dir if self._disk else self._scratch_dir()
        assert self._child is not None
        result = self._child.build(file.fd, name=path, out_dir=out, file_name=f"{key}{SUFFIX}",
                                   key=key, build_id=build_id)
        self.build_cpu_s += result.cpu_s
        self.build_peak_rss = max(self.build_peak_rss, result.max_rss)
        table = None
        if result.status == "built":
            table = self._load(out / f"{key}{SUFFIX}", key, build_id)
            if not self._disk:
                (out / f"{key}{SUFFIX}").unlink(missing_ok=True)   # mapped: stays valid
        if table is not None:
            self.built += 1
            if self._disk:
                self._cap()
        else:
            if result.status == "rejected":
                self._reject(result.reason, path)
            else:
                log.debug("no unwind table for %s: %s", path, result.reason)
                self.failed += 1
            table = _empty_table(build_id)
        with self._lock:
            self._mem[key] = table

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="telegen-unwind-"))
        return self._scratch

    def close(self) -> None:
        """Stop the background thread and the builder child (queued files are dropped)."""
        if self._thread is not None:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    item[1].close()
            self._queue.put(None)
            self._thread.join(30)
        if self._child is not None:
            self._child.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def builder_pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def cache_dir(self) -> Path:
        return self._dir

    def __len__(self) -> int:
        with self._lock:
            return len(self._mem)


def _small_pages(mapped: mmap.mmap) -> None:
    """No PMD (huge page) mappings of the file: ext4 and tmpfs keep page cache
    in large folios, mapped whole by one touch (6.18 still maps a large
    folio's pages on a fault, but not as one 2 MB entry)."""
    try:
        mapped.madvise(mmap.MADV_NOHUGEPAGE)
    except (OSError, AttributeError, ValueError):
        pass


def _drop_resident(mapped: mmap.mmap) -> None:
    try:
        mapped.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):       # closed, or refused: it stays resident
        pass


def _empty_table(build_id: str) -> UnwindTable:
    from array import array

    return UnwindTable(array("Q"), array("I"), [], [], build_id=build_id)

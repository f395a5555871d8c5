"""DWARF symbol indexes: built once per file in a limited child, kept on disk,
used in place through ``mmap``.

Why Sentry's ``symbolic`` (SymCache) — measured on pyenv's
``libpython3.12.so`` (13.7 MB ``.debug_info``; ``bench/symbol_index.py``,
README "Symbol index"): the whole file indexed in 0.44 s of CPU into a 7.6 MB
SymCache, against 46 s and +1.8 GB RSS for 2000 addresses through
pyelftools CU trees, and 146 MB resident in a long-lived ``llvm-symbolizer``.

* :class:`IndexBuilder` — one background thread; each job runs
  ``python -m telegen.symbols.symcache_child`` on the file's descriptor
  (``nice 19``, ``RLIMIT_CPU``, ``RLIMIT_AS``, no core), with a wall-clock
  deadline besides; the result is renamed into ``cache_dir("index")`` as
  ``<build-id>-<identity hash>.symc`` (identity: device, inode, size, mtime,
  ctime of the file indexed), so a later run, or another process mapping the
  same file, opens it without building. A job over its limits fails with a
  reason (``cpu_time``, ``memory``, ``malformed``, ``timeout``) and the file
  is answered from its symbol tables.
* :class:`SymIndex` — an index file ``mmap``-ed read-only: look-ups run in
  symbolic's code over the mapped bytes; no Python object per row. Its memory
  is the part of the mapping in the agent's page tables (``resident``, from
  smaps at the symbolizer's sweep), counted in the symbolizer's budget;
  :meth:`SymIndex.trim` gives it back (``MADV_DONTNEED``).
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from telegen.procinfo import agent
from telegen.procinfo.elfheaders import valid_build_id
from telegen.procinfo.procfs import fd_path
from telegen.symbols.budget import ParseLimits

log = logging.getLogger(__name__)

FORMAT = "symc1"            # part of the file name: a new layout never reads an old file
MAX_QUEUE = 256             # jobs waiting; past it a file is answered from its tables
MAX_INDEX_DISK_BYTES = 4 << 30
# the child's RLIMIT_AS: the interpreter and symbolic (~150 MB of address
# space, ~16 MB resident) plus 4x the file (libpython3.12: 30 MB file, built
# within 200 MB); capped by ParseLimits.step_memory_bytes
BASE_ADDRESS_SPACE = 192 << 20
# run as a script (-I: no environment, no script directory on the path): the
# child imports symbolic and nothing of the agent
_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symcache_child.py")
_PAGE = mmap.PAGESIZE

# (raw or mangled name, plain name, file, line, decl line), innermost first
IndexLine = tuple[str, str, str, int, int]
# GCC's clone suffixes: SymCache names a function by its ELF symbol
# (``long_new_impl.part.0``, ``_ZN..El.cold``); DWARF, and this symbolizer
# before, by the function (``long_new_impl``)
_CLONE = re.compile(r"(?:\.(?:part|isra|constprop|cold|lto_priv|localalias)(?:\.\d+)?)+$")
# glibc's internal aliases are asm labels (``__GI__IO_setb`` for ``_IO_setb``,
# ``__EI_xdr_union``): SymCache keeps the label (DW_AT_linkage_name), DWARF's
# name is the function's
_GLIBC_ALIAS = re.compile(r"^__[GE]I_(?=.)")


def index_name(build_id: str, identity: tuple[int, ...]) -> str:
    bid = build_id if build_id and valid_build_id(build_id) else "nobuildid"
    ident = hashlib.sha256(repr((FORMAT, tuple(identity))).encode()).hexdigest()[:24]
    return f"{bid}-{ident}.symc"


class SymIndex:
    """One index file, mapped read-only. ``lookup`` is thread-safe."""

    def __init__(self, path: str) -> None:
        from symbolic.symcache import SymCache, attached_refs, ffi, lib, rustcall

        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        self.size = len(self._map)
        buf = ffi.from_buffer(self._map)
        self._address = int(ffi.cast("uintptr_t", buf))
        # bytes of the mapping in the agent's page tables, as last measured
        # (:meth:`Symbolizer` sweeps read them from smaps for all at once)
        self.resident = 0
        self._cache = SymCache._from_objptr(
            rustcall(lib.symbolic_symcache_from_bytes, buf, self.size))
        attached_refs[self._cache] = (self._map, buf)  # type: ignore[assignment]

    def lookup(self, vaddr: int) -> list[IndexLine] | None:
        """Innermost function first (inlined callees before their callers);
        None when no DWARF function holds ``vaddr`` (an entry that only
        comes from the symbol table, with no file, counts as none)."""
        found = self.lookup_entry(vaddr)
        return found[0] if found is not None else None

    def lookup_entry(self, vaddr: int) -> tuple[list[IndexLine], int, str] | None:
        """:meth:`lookup`, the start of the outermost function's range that
        holds ``vaddr``, and that function's name as SymCache has it: the
        ELF symbol at the function's *lowest* address, which may be a cold
        piece's or any alias there (libpython's ``_PyEval_EvalFrameDefault``
        comes out as ``ast2obj_expr.cold``, an empty symbol at its cold
        part): the caller may name it from its own symbol table."""
        found: Any = self._cache.lookup(vaddr)
        if not found or (len(found) == 1 and not found[0].full_path and not found[0].line):
            return None
        out: list[IndexLine] = []
        for loc in found:
            name = clean_name(loc.symbol)
            out.append((name, name, _source_path(loc.full_path), int(loc.line), 0))
        return out, int(found[-1].sym_addr), str(found[-1].symbol)

    @property
    def address(self) -> int:
        return self._address

    def trim(self) -> None:
        """Give the mapping's resident pages back (``MADV_DONTNEED`` on a
        read-only shared file mapping: the next look-up faults them in again
        from the page cache, no re-open, no re-parse)."""
        if self._cache is not None:
            self._map.madvise(mmap.MADV_DONTNEED)
            self.resident = 0

    def close(self) -> None:
        # the SymCache holds the mapping's address: drop it first, then the map
        self._cache = None
        # mmap.close() would fail while a buffer export is alive; the map goes with
        # its last reference (attached_refs is keyed weakly by the SymCache).


class IndexJob:
    """One file to index. ``fd`` is owned by the job (closed when done)."""

    __slots__ = ("fd", "path", "name", "done", "index", "reason", "cpu_s", "on_done", "noted")

    def __init__(self, fd: int, path: str, name: str,
                 on_done: Callable[[IndexJob], None] | None = None) -> None:
        self.fd, self.path, self.name, self.on_done = fd, path, name, on_done
        self.done = threading.Event()
        self.index: SymIndex | None = None
        self.reason = ""
        self.cpu_s = 0.0
        self.noted = False          # its failure counted by the object using it

    def finish(self, index: SymIndex | None, reason: str = "") -> None:
        self.index, self.reason = index, reason
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:
                log.exception("index job callback failed")


class IndexBuilder:
    """Builds index files one at a time in a background thread."""

    def __init__(self, directory: str, limits: ParseLimits, *,
                 max_disk_bytes: int = MAX_INDEX_DISK_BYTES) -> None:
        self.directory = directory
        self.limits = limits
        self.max_disk_bytes = max_disk_bytes
        self._queue: queue.Queue[IndexJob | None] = queue.Queue(MAX_QUEUE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.built = 0
        self.failed: dict[str, int] = {}
        self.build_cpu_s = 0.0

    def open_or_build(self, fd: int, build_id: str, identity: tuple[int, ...], name: str,
                      on_done: Callable[[IndexJob], None] | None = None) -> IndexJob:
        """The index of the file open on ``fd`` (the job takes a duplicate):
        opened at once from disk when built before, else queued."""
        path = os.path.join(self.directory, index_name(build_id, identity))
        job = IndexJob(-1, path, name, on_done)
        if os.path.exists(path):
            try:
                job.finish(SymIndex(path))
                os.utime(path)       # recently used: the last to be pruned
                return job
            except Exception as exc:      # a torn or foreign file: built again
                log.debug("index %s unreadable (%s): rebuilding", path, exc)
                _unlink(path)
        job.fd = os.dup(fd)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            job.finish(None, "queue_full")
            return job
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="symbol-index-builder",
                                                daemon=True)
                self._thread.start()
        return job

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._build(job)
            except Exception as exc:
                log.debug("building %s failed: %s", job.name, exc)
                job.finish(None, "error")

    def _build(self, job: IndexJob) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        tmp = f"{job.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        _unlink(tmp)
        limits = self.limits
        address_space = min(limits.step_memory_bytes,
                            BASE_ADDRESS_SPACE + 4 * os.fstat(job.fd).st_size)
        cmd = [sys.executable, "-I", _CHILD, fd_path(job.fd), tmp,
               str(limits.object_cpu_s), str(address_space)]
        before = os.times()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, pass_fds=(job.fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                close_fds=True, env={"RUST_BACKTRACE": "0", "LC_ALL": "C"})
        agent.child_started(proc.pid)        # the agent's own work: not profiled
        deadline = max(60.0, limits.object_cpu_s * 10)   # nice 19 on a busy host is slow
        try:
            _out, err = proc.communicate(timeout=deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        finally:
            agent.child_ended(proc.pid)
        after = os.times()
        job.cpu_s = (after.children_user - before.children_user
                     + after.children_system - before.children_system)
        self.build_cpu_s += job.cpu_s
        reason = _reason(proc.returncode, err[:2000].decode("utf-8", "replace"),
                         time.monotonic() - started >= deadline)
        if reason:
            _unlink(tmp)
            self.failed[reason] = self.failed.get(reason, 0) + 1
            log.debug("index of %s not built (%s): %s", job.name, reason, err[:300])
            job.finish(None, reason)
            return
        os.replace(tmp, job.path)
        self.built += 1
        self._prune()
        job.finish(SymIndex(job.path))

    def _prune(self) -> None:
        """Least recently modified index files go past ``max_disk_bytes``."""
        try:
            entries = [(e.stat().st_mtime, e.stat().st_size, e.path)
                       for e in os.scandir(self.directory) if e.name.endswith(".symc")]
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        for _mtime, size, path in sorted(entries):
            if total <= self.max_disk_bytes:
                break
            _unlink(path)
            total -= size


def is_clone(symbol: str) -> bool:
    return _CLONE.search(symbol.partition("@")[0]) is not None


def clean_name(symbol: str) -> str:
    """A symbol's name without version (``memcpy@@GLIBC_2.14``), GCC clone
    suffix and glibc internal-alias prefix: the function's name."""
    name = _CLONE.sub("", symbol.partition("@")[0] or symbol)
    return _GLIBC_ALIAS.sub("", name)


def _source_path(path: str) -> str:
    """SymCache joins a DWARF 5 unit's *relative* compilation directory with
    directory entry 0, which is that same directory (Debian's glibc:
    ``./libio`` + ``./libio`` + ``genops.c`` → ``libio/libio/genops.c``): a
    relative path whose leading components repeat once loses the repeat."""
    if not path:
        return ""
    path = os.path.normpath(path)
    if path.startswith("/"):
        return path
    parts = path.split("/")
    for k in range(len(parts) // 2, 0, -1):
        if parts[:k] == parts[k:2 * k] and len(parts) > 2 * k:
            return "/".join(parts[k:])
    return path


class Workers:
    """A few daemon threads for work that waits on the network (debuginfod
    downloads): never joined at exit, a bounded queue (``submit`` is False
    when full or closed)."""

    def __init__(self, count: int, name: str, max_queue: int = MAX_QUEUE) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(max_queue)
        self._count, self._name = count, name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> bool:
        with self._lock:
            if self._closed:
                return False
            if len(self._threads) < self._count:
                t = threading.Thread(target=self._run, name=self._name, daemon=True)
                t.start()
                self._threads.append(t)
        try:
            self._queue.put_nowait(fn)
        except queue.Full:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break

    def _run(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:
                log.exception("background work failed")


def _reason(code: int, err: str, timed_out: bool) -> str:
    if code == 0:
        return ""
    if timed_out:
        return "timeout"
    if code in (-9, -24) or "SIGXCPU" in err:      # RLIMIT_CPU: SIGXCPU, then SIGKILL
        return "cpu_time"
    if code == 4 or "memory allocation" in err or err.startswith("memory"):
        return "memory"
    if code == 3:
        return "malformed"
    return "crashed"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

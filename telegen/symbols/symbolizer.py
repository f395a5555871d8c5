"""The facade: address → :class:`Resolution`, with the caches that make the
warm path one dict look-up.

Memory: ``cache_size`` is a budget in bytes for everything kept (floor
:data:`MIN_CACHE_BYTES`), shared out as

* objects (3/4) — opened ELF/debug files per build-id *and content digest*
  (:mod:`telegen.symbols.fileid`: a file that copies another's build-id never
  shares its entry; the mismatch is counted), each weighed by its symbol
  tables (flat arrays) and the *resident* pages of its mmapped DWARF index
  (:mod:`telegen.symbols.symindex`, measured from smaps every :data:`RESIDENT_S`),
  re-weighed every :data:`SWEEP_S`;
  before re-weighing, the indexes past the most recently used half of the
  share give their resident pages back (``madvise``: a later look-up faults
  them in from the page cache), so mapped indexes never push objects out
  (closing and re-opening an object costs its symbol tables' parse: a cyclic
  re-open of libc and libpython every window was 20% of a core); least
  recently used closed first when the tables alone exceed the share;
* results (1/4) — per (object key, file offset) for native code, per address
  for the kernel, per (pid, address) for JIT code, weighed by their strings;
* perf maps — not (yet) in ``cache_size``: their own bound as before, at most
  :data:`PERF_MAPS_BYTES` read (~3.3x that in memory: a 12 MiB map of a JIT
  process is ~40 MB of Python objects, more than a 64 MiB budget could share);
* (pid, path, build-id) → object key, so a process's mapping opens its file
  once (by descriptor, inside the process's root: :func:`open_mapped`).

Per-process entries (keys, perf maps, JIT results) of processes that exited
are dropped at the next sweep.

First sight: DWARF indexes are built by a limited child in the background and
debuginfod downloads run off the lock; a look-up never waits for them longer
than what is left of ``index_wait_s`` for the current window (a bucket of
``index_wait_s`` refilled over ``window_s``). Past it the frame goes out with
its symbol-table name, ``Resolution.pending`` set (not cached; counted in
``symbolize_provisional_frames``).

Objects over their parse budget or caps are skipped and counted
(``symbolize_rejected_objects{reason}`` through ``rejected_counter``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cachetools import LRUCache

from telegen.cachedir import cache_dir
from telegen.procinfo.agent import resident_by_mapping
from telegen.procinfo.elfheaders import valid_build_id
from telegen.procinfo.maps import MappedFile, open_mapped
from telegen.procinfo.procfs import KALLSYMS, PROC, alive
from telegen.symbols.budget import DEFAULT_LIMITS, ParseLimits
from telegen.symbols.debuginfod import DebuginfodClient, default_cache_dir, urls_from_env
from telegen.symbols.demangle import Demangler, language
from telegen.symbols.fileid import ContentKeys
from telegen.symbols.kallsyms import KernelSymbols
from telegen.symbols.objects import ObjectSymbols
from telegen.symbols.perfmap import MAX_PERF_MAP_BYTES, PerfMap, perf_map_for
from telegen.symbols.symindex import IndexBuilder, IndexLine, Workers
from telegen.symbols.types import UNKNOWN, CounterLike, Resolution, SymLine
from telegen.untrusted import Refusals

PERF_MAPS_BYTES = 2 * MAX_PERF_MAP_BYTES
DEFAULT_CACHE_BYTES = 32 << 20
MIN_CACHE_BYTES = 4 << 20
SWEEP_S = 5.0
RESIDENT_S = 30.0     # how often mapped indexes' resident pages are measured (smaps)
NO_PERFMAP_S = 10.0         # a process without a perf map is looked at again after this

log = logging.getLogger(__name__)


@dataclass
class SymbolizerOptions:
    demangle_cpp: bool = True
    demangle_rust: bool = True
    debug_dirs: Sequence[str] = ("/usr/lib/debug",)
    debuginfod_urls: Sequence[str] | None = None      # None: $DEBUGINFOD_URLS
    debuginfod_cache_dir: str = field(default_factory=default_cache_dir)
    debuginfod_timeout_s: float = 5.0
    debuginfod_max_size: int = 1 << 30
    debuginfod_negative_ttl_s: float = 600.0
    cache_size: int = DEFAULT_CACHE_BYTES  # bytes kept in memory, all caches together
    result_cache_size: int = 1 << 18      # resolved addresses kept (also within the bytes)
    index_dir: str = ""                   # "": cache_dir("index")
    # waiting for first-sight indexes and downloads: at most this much per
    # window_s (default one window of the ebpf receiver: a profile is late by
    # at most one window, never more)
    index_wait_s: float = 10.0
    window_s: float = 10.0
    proc_root: str = PROC
    kallsyms_path: str = KALLSYMS
    parse_limits: ParseLimits = DEFAULT_LIMITS   # caps and CPU/memory budget per object


def is_anonymous(file: str) -> bool:
    """Mappings with no file behind them: where JIT code lives."""
    return (not file or file.startswith("[anon") or file.startswith("//anon")
            or file.startswith("/memfd:"))


class Symbolizer:
    """Thread-safe. Use :meth:`native`, :meth:`kernel` and :meth:`jit`."""

    def __init__(self, options: SymbolizerOptions | None = None, *,
                 counters: Mapping[str, CounterLike] | None = None,
                 refusals: Refusals | None = None,
                 rejected_counter: Callable[[str], CounterLike] | None = None) -> None:
        self.options = opts = options or SymbolizerOptions()
        self.refusals = refusals or Refusals(None, log)
        self._rejected_counter = rejected_counter
        self.rejected: dict[str, int] = {}          # objects skipped, by reason
        self.content_keys = ContentKeys(max(4096, opts.cache_size * 16))
        urls = urls_from_env() if opts.debuginfod_urls is None else list(opts.debuginfod_urls)
        self.debuginfod = DebuginfodClient(
            urls, opts.debuginfod_cache_dir, timeout_s=opts.debuginfod_timeout_s,
            max_size=opts.debuginfod_max_size, negative_ttl_s=opts.debuginfod_negative_ttl_s,
            counters={k[len("debuginfod_"):]: v for k, v in (counters or {}).items()
                      if k.startswith("debuginfod_")}) if urls else None
        self.demangler = Demangler(cpp=opts.demangle_cpp, rust=opts.demangle_rust)
        budget = max(MIN_CACHE_BYTES, opts.cache_size)
        self.cache_bytes = budget
        obj_share, result_share = budget * 3 // 4, budget // 4
        self._objects: _ClosingLRU = _ClosingLRU(
            obj_share, getsizeof=lambda o: min(obj_share, o.memory_bytes()))
        self._results: LRUCache[tuple[object, ...], Resolution] = LRUCache(
            result_share, getsizeof=lambda r: min(result_share, _result_bytes(r)))
        self._result_limit = max(16, opts.result_cache_size)
        self._keys: LRUCache[tuple[int, str, str], str] = LRUCache(4096)
        # weighed in bytes read (a map costs ~3.3x its size in memory): all maps
        # together stay under PERF_MAPS_BYTES (~105 MB of memory), least
        # recently used dropped first; a process's map goes when it exits.
        self._perfmaps: LRUCache[int, PerfMap] = LRUCache(
            PERF_MAPS_BYTES, getsizeof=lambda pm: 1 + pm.bytes_read)
        # pid -> until when "it has no perf map" holds (every anonymous frame
        # looked again: 40% of a churning host's window thread)
        self._no_perfmap: LRUCache[int, float] = LRUCache(65536)
        self.builder = IndexBuilder(opts.index_dir or cache_dir("index"), opts.parse_limits)
        # downloads wait on the network: a few at once, so one stalled server
        # does not queue every other build-id behind it
        self._downloads = Workers(4, "symbol-debuginfod")
        self._provisional = (counters or {}).get("symbolize_provisional_frames")
        self.provisional_frames = 0
        self._wait_left = opts.index_wait_s
        self._wait_at = time.monotonic()
        self._swept = time.monotonic()
        self._measured = 0.0
        self._kernel: KernelSymbols | None = None
        self._kernel_loaded = False
        self._lock = threading.RLock()

    # -- native code ---------------------------------------------------------------
    def native(self, address: int, *, file: str, start: int, offset: int,
               build_id: str = "", pid: int = 0) -> Resolution:
        """Resolve ``address`` (a process virtual address inside the mapping
        ``[start, …)`` of ``file`` at file ``offset``)."""
        file_offset = address - start + offset
        key = self._keys.get((pid, file, build_id))
        if key is not None:
            hit = self._results.get((key, file_offset))
            if hit is not None:
                return hit
        with self._lock:
            self._sweep()
            # a mapping seen before keeps its object: no re-open and re-hash per miss
            known = self._objects.get(key) if key is not None else None
            if known is not None and key is not None:
                known.used_at = time.monotonic()
                obj: ObjectSymbols | None = known if known.usable else None
            else:
                obj, key = self._object(file, build_id, pid, start)
            if obj is None:
                return UNKNOWN
            hit = self._results.get((key, file_offset))   # known from another process
            if hit is not None:
                return hit
            res = self._resolve_native(obj, file_offset)
            if not res.pending:
                return self._keep((key, file_offset), res)
            wait = self._wait_budget()
        if wait > 0:             # first sight: the index is being built; never under the lock
            t0 = time.monotonic()
            obj.wait(wait)
            with self._lock:
                self._wait_left -= time.monotonic() - t0
                res = self._resolve_native(obj, file_offset)
                if not res.pending:
                    return self._keep((key, file_offset), res)
        self.provisional_frames += 1
        if self._provisional is not None:
            self._provisional.add()
        return res

    def _keep(self, key: tuple[object, ...], res: Resolution) -> Resolution:
        if len(self._results) >= self._result_limit:
            self._results.popitem()
        self._results[key] = res
        return res

    def _wait_budget(self) -> float:
        """What is left of ``index_wait_s`` in the current window (a bucket
        refilled at ``index_wait_s`` per ``window_s``)."""
        opts = self.options
        now = time.monotonic()
        rate = opts.index_wait_s / max(opts.window_s, 1e-3)
        self._wait_left = min(opts.index_wait_s, self._wait_left + (now - self._wait_at) * rate)
        self._wait_at = now
        return max(0.0, self._wait_left)

    def _sweep(self) -> None:
        """Every SWEEP_S: re-weigh objects (their mapped indexes' resident
        pages change) and drop what belongs to processes that exited."""
        now = time.monotonic()
        if now - self._swept < SWEEP_S:
            return
        self._swept = now
        by_use = sorted(self._objects.items(), key=lambda kv: kv[1].used_at)
        if now - self._measured >= RESIDENT_S:      # smaps: ~1 ms per 100 mappings
            self._measured = now
            resident = resident_by_mapping()
            for _, obj in by_use:
                obj.measure(resident)
            self._trim_indexes([obj for _, obj in reversed(by_use)])
        for key, obj in by_use:        # re-weighed, least recently used first
            if key in self._objects:
                self._objects[key] = obj
        gone = {pid for pid in {k[0] for k in list(self._keys.keys())} | set(self._perfmaps)
                if pid > 0 and not _alive(self.options.proc_root, pid)}
        if gone:
            self.forget_processes(gone)

    def _trim_indexes(self, newest_first: list[ObjectSymbols]) -> None:
        """Keep resident index pages within half the objects' share, the most
        recently used objects' first; the others' pages are given back."""
        room = self._objects.maxsize // 2
        for obj in newest_first:
            if obj.memory_bytes() > room:
                obj.trim()
            room = max(0, room - obj.memory_bytes())

    def forget_processes(self, pids: set[int]) -> None:
        """Drop what is kept per process for ``pids`` (they exited)."""
        with self._lock:
            for k in [k for k in list(self._keys.keys()) if k[0] in pids]:
                self._keys.pop(k, None)
            for pid in pids:
                self._perfmaps.pop(pid, None)
                self._no_perfmap.pop(pid, None)
            for rk in [r for r in list(self._results.keys()) if r[0] == "j" and r[1] in pids]:
                self._results.pop(rk, None)

    def _resolve_native(self, obj: ObjectSymbols, file_offset: int) -> Resolution:
        vaddr = obj.to_vaddr(file_offset)
        pending = obj.pending          # read first: an index finishing now is used next time
        answer = obj.lookup(vaddr) if vaddr is not None else None
        if answer is None:
            return Resolution((), "unknown", obj.has_functions, obj.has_dwarf,
                              obj.has_dwarf, obj.has_dwarf, pending)
        source, raw, from_index = answer
        provisional = pending and not from_index
        return Resolution(self._lines(raw), source, True, obj.has_dwarf, obj.has_dwarf,
                          obj.has_dwarf, provisional)

    def _lines(self, raw: list[IndexLine]) -> tuple[SymLine, ...]:
        out = []
        for system, plain, file, line, decl in raw:
            if language(system):
                function = self.demangler.demangle(system)
            else:
                function = plain or system
            out.append(SymLine(function, file, line, system if system != function else "",
                               decl))
        return tuple(out)

    def _object(self, file: str, build_id: str, pid: int,
                start: int) -> tuple[ObjectSymbols | None, str]:
        if build_id and not valid_build_id(build_id):
            self.refusals.note("build_id", "bad_build_id", repr(build_id[:80]))
            build_id = ""
        mapped = open_mapped(pid, file, start, proc=self.options.proc_root,
                             refusals=self.refusals, host_fallback=True, build_id=build_id)
        try:
            if mapped is None:
                if not build_id:
                    return None, ""
                key = build_id        # the host's debug files (and debuginfod) only
            else:
                key, mismatch = self.content_keys.key(build_id, mapped.fd, mapped.identity)
                if mismatch:
                    self.refusals.note("build_id", "content_mismatch",
                                       f"{file}: other content than the first {build_id}")
            obj = self._objects.get(key)
            if obj is None:
                obj = self._open(mapped, build_id)
                self._objects[key] = obj
            obj.used_at = time.monotonic()
            self._keys[(pid, file, build_id)] = key
            return (obj if obj.usable else None), key
        finally:
            if mapped is not None:
                mapped.close()

    def _open(self, mapped: MappedFile | None, build_id: str) -> ObjectSymbols:
        return ObjectSymbols(mapped, build_id, debug_dirs=self.options.debug_dirs,
                            debuginfod=self.debuginfod, limits=self.options.parse_limits,
                            refusals=self.refusals, on_rejected=self.note_rejected,
                            builder=self.builder, background=self._background)

    def _background(self, fn: Callable[[], None]) -> bool:
        return self._downloads.submit(fn)

    def note_rejected(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self._rejected_counter is not None:
            self._rejected_counter(reason).add()

    # -- kernel --------------------------------------------------------------------
    def kernel(self, address: int) -> Resolution:
        hit = self._results.get(("k", address))
        if hit is not None:
            return hit
        with self._lock:
            if not self._kernel_loaded:
                self._kernel_loaded = True
                try:
                    self._kernel = KernelSymbols(self.options.kallsyms_path)
                except OSError as exc:
                    log.warning("kernel symbols unavailable: %s", exc)
            found = self._kernel.lookup(address) if self._kernel else None
            if found is None:
                res = UNKNOWN
            else:
                name, module, _start = found
                shown = f"{name} [{module}]" if module else name
                res = Resolution((SymLine(shown, "", 0, name if module else ""),),
                                 "kallsyms", True)
            return self._keep(("k", address), res)

    # -- JIT -----------------------------------------------------------------------
    def jit(self, address: int, pid: int) -> Resolution:
        """JIT code from the process's own ``/tmp/perf-PID.map`` (see :meth:`_perfmap`)."""
        if not pid:
            return UNKNOWN
        hit = self._results.get(("j", pid, address))
        if hit is not None:
            return hit
        with self._lock:
            pm = self._perfmap(pid)
            found = pm.lookup(address) if pm is not None else None
            if pm is not None:
                self._perfmaps[pid] = pm      # weighed again: it may have grown
            if found is None:
                return UNKNOWN    # not cached: the map may grow and name it later
            res = Resolution((SymLine(found[0]),), "perfmap", True)
            return self._keep(("j", pid, address), res)

    def _perfmap(self, pid: int) -> PerfMap | None:
        """``/tmp/perf-<its own pid>.map`` inside the process's root, owned by
        its uid and size-capped (:func:`perf_map_for`); refusals noted once."""
        pm = self._perfmaps.get(pid)
        if pm is None:
            now = time.monotonic()
            if self._no_perfmap.get(pid, 0.0) > now:
                return None       # looked for lately: most processes have none
            pm = perf_map_for(pid, proc=self.options.proc_root, refusals=self.refusals)
            if pm is not None:
                self._perfmaps[pid] = pm
            else:
                self._no_perfmap[pid] = now + NO_PERFMAP_S
        return pm

    def close(self) -> None:
        with self._lock:
            self._objects.clear()
            self.demangler.close()
        self.builder.close()
        self._downloads.close()


class _ClosingLRU(LRUCache[str, ObjectSymbols]):
    """An LRU of object files that closes what it evicts."""


    def popitem(self) -> tuple[str, ObjectSymbols]:
        key, obj = super().popitem()
        obj.close()
        return key, obj

    def clear(self) -> None:
        while self:
            self.popitem()


def _result_bytes(res: Resolution) -> int:
    """About what one cached resolution costs: the tuples and their strings."""
    return 200 + sum(120 + len(ln.function) + len(ln.file) + len(ln.system_name)
                     for ln in res.lines)


def _alive(proc_root: str, pid: int) -> bool:
    return alive(pid, proc_root)

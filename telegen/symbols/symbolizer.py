"""The facade: address → :class:`Resolution`, with the caches that make the
warm path one dict look-up.

Caches (all bounded):

* objects — parsed ELF/debug files (symbol tables, DWARF CU indexes) per
  build-id *and content digest* (:mod:`telegen.symbols.fileid`: a file that
  copies another's build-id never shares its entry; the mismatch is counted):
  an LRU of ``cache_size`` entries; evicted files are closed;
* results — per (object key, file offset) for native code, per address for
  the kernel, per (pid, address) for JIT code: an LRU of ``result_cache_size``;
* (pid, path, build-id) → object key, so a process's mapping opens its file
  once (by descriptor, inside the process's root: :func:`open_mapped`).

Objects over their parse budget or caps are skipped and counted
(``symbolize_rejected_objects{reason}`` through ``rejected_counter``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cachetools import LRUCache

from telegen.procinfo.elfheaders import valid_build_id
from telegen.procinfo.maps import MappedFile, open_mapped
from telegen.symbols.budget import DEFAULT_LIMITS, ParseLimits
from telegen.symbols.debuginfod import DebuginfodClient, default_cache_dir, urls_from_env
from telegen.symbols.demangle import Demangler, language
from telegen.symbols.dwarf import DwarfLine
from telegen.symbols.fileid import ContentKeys
from telegen.symbols.kallsyms import KernelSymbols
from telegen.symbols.objects import ObjectSymbols
from telegen.symbols.perfmap import MAX_PERF_MAP_BYTES, PerfMap, perf_map_for
from telegen.symbols.types import UNKNOWN, CounterLike, Resolution, SymLine
from telegen.untrusted import Refusals

PERF_MAPS_BYTES = 2 * MAX_PERF_MAP_BYTES

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
    cache_size: int = 128                 # parsed object files kept
    result_cache_size: int = 1 << 18      # resolved addresses kept
    proc_root: str = "/proc"
    kallsyms_path: str = "/proc/kallsyms"
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
        self._objects: _ClosingLRU = _ClosingLRU(max(1, opts.cache_size))
        self._results: LRUCache[tuple[object, ...], Resolution] = LRUCache(
            max(16, opts.result_cache_size))
        self._keys: LRUCache[tuple[int, str, str], str] = LRUCache(max(64, opts.cache_size * 16))
        # weighed in bytes read (a map costs ~3.3x its size in memory): 128 maps at
        # the 16 MiB cap each would be ~7 GB; all maps together stay under
        # PERF_MAPS_BYTES (~105 MB of memory), least recently used dropped first.
        self._perfmaps: LRUCache[int, PerfMap] = LRUCache(
            PERF_MAPS_BYTES, getsizeof=lambda pm: 1 + pm.bytes_read)
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
            # a mapping seen before keeps its object: no re-open and re-hash per miss
            known = self._objects.get(key) if key is not None else None
            if known is not None and key is not None:
                obj: ObjectSymbols | None = known if known.usable else None
            else:
                obj, key = self._object(file, build_id, pid, start)
            if obj is None:
                return UNKNOWN
            hit = self._results.get((key, file_offset))   # known from another process
            if hit is not None:
                return hit
            res = self._resolve_native(obj, file_offset)
            self._results[(key, file_offset)] = res
            return res

    def _resolve_native(self, obj: ObjectSymbols, file_offset: int) -> Resolution:
        vaddr = obj.to_vaddr(file_offset)
        answer = obj.lookup(vaddr) if vaddr is not None else None
        if answer is None:
            return Resolution((), "unknown", obj.has_functions, obj.has_dwarf,
                              obj.has_dwarf, obj.has_dwarf)
        source, raw = answer
        return Resolution(self._lines(raw), source, True, obj.has_dwarf, obj.has_dwarf,
                          obj.has_dwarf)

    def _lines(self, raw: list[DwarfLine]) -> tuple[SymLine, ...]:
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
            self._keys[(pid, file, build_id)] = key
            return (obj if obj.usable else None), key
        finally:
            if mapped is not None:
                mapped.close()

    def _open(self, mapped: MappedFile | None, build_id: str) -> ObjectSymbols:
        return ObjectSymbols(mapped, build_id, debug_dirs=self.options.debug_dirs,
                            debuginfod=self.debuginfod, limits=self.options.parse_limits,
                            refusals=self.refusals, on_rejected=self.note_rejected)

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
            self._results[("k", address)] = res
            return res

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
            self._results[("j", pid, address)] = res
            return res

    def _perfmap(self, pid: int) -> PerfMap | None:
        """``/tmp/perf-<its own pid>.map`` inside the process's root, owned by
        its uid and size-capped (:func:`perf_map_for`); refusals noted once."""
        pm = self._perfmaps.get(pid)
        if pm is None:
            pm = perf_map_for(pid, proc=self.options.proc_root, refusals=self.refusals)
            if pm is not None:
                self._perfmaps[pid] = pm
        return pm

    def close(self) -> None:
        with self._lock:
            self._objects.clear()
            self.demangler.close()


class _ClosingLRU(LRUCache[str, ObjectSymbols]):
    """An LRU of object files that closes what it evicts."""

    def popitem(self) -> tuple[str, ObjectSymbols]:
        key, obj = super().popitem()
        obj.close()
        return key, obj

    def clear(self) -> None:
        while self:
            self.popitem()

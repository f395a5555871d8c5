"""Go processes for the BPF side of #26 (bpf/golabels.h): registration, the
goroutine label sets read at sample time, and the goroutine behind a sample
taken on Go's system stack.

``seen(pid)`` reads the process's executable once (by descriptor, inside its
root): a Go binary (``.go.buildinfo`` / pclntab) with a version from its
build info gets a ``go_procs`` entry — the g/m offsets, the TLS slot of g,
the label layout, and ``g.labels``' offset read from the binary's own
``runtime/pprof.runtime_setProfLabel`` (``MOV reg, disp32(R14)``: the store
``getg().labels = labels``), so a version not seen here still works.
``exited(pid)`` removes it. The entry also holds the run-time range of the
executable's Go code (the pclntab's functions), so that BPF keys the copies
of stacks whose leaf is Go code on their frame-pointer chain. Offsets of
g.m, g.sched, g.stack, m.g0 and m.curg are those of Go 1.18–1.25 (checked
against the DWARF of Go 1.19 and 1.24 binaries: unchanged). Go older than
1.18 is not registered (no label reading; its stacks still unwind).

``labels(pid, set_id)`` turns a sample's ``go_labels`` id into label pairs
(read once per id, then cached); ``goroutine_context(snapshot_id)`` hands
the unwinder the goroutine's registers and stack.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from cachetools import LRUCache

from telegen.pdata import Mapping
from telegen.procinfo import ProcessCache
from telegen.procinfo.elfheaders import ElfHeaders, read_headers
from telegen.procinfo.maps import open_mapped
from telegen.symbols.gopclntab import GoFunctions, is_go
from telegen.symbols.gopclntab_locate import Segment, load_segments
from telegen.untrusted import Refusals, Refused
from telegen.unwind.table import load_bias
from telegen.unwind.unwinder import SwitchContext

log = logging.getLogger(__name__)

BUILDINFO_MAGIC = b"\xff Go buildinf:"
MAX_BUILDINFO_SCAN = 1 << 20       # bytes of a data segment searched for the magic
SET_LABEL_FUNCTION = "runtime/pprof.runtime_setProfLabel"
LABELS_MAP, LABELS_SLICE = 1, 2    # bpf/golabels.h GO_LABELS_*
SETTINGS_KEY = 0                   # go_procs[0].tls_offset = thread.fsbase offset
# runtime.g / runtime.m / runtime.gobuf offsets, Go 1.18-1.25 on amd64
G_STACK_HI, G_M, G_SCHED, M_G0, M_CURG = 8, 48, 56, 0, 192
MAX_PAIRS = 8
LABEL_LEN = 64
_VERSION = re.compile(r"go(\d+)\.(\d+)")
# Label names the agent itself puts on samples (who and which thread): a Go
# program's label may not stand in for them (nor collide with them)
RESERVED_PREFIXES = ("process.", "thread.", "container.", "k8s.", "service.", "host.",
                     "os.", "telegen.")


class GoFacts(NamedTuple):
    version: tuple[int, int]
    tls_offset: int
    labels_offset: int          # 0: the binary never sets labels
    labels_kind: int
    vdso_sp: int = 0            # m.vdsoSP, m.vdsoPC (0: unknown)
    vdso_pc: int = 0
    text: tuple[int, int] = (0, 0)      # Go code [lo, hi), link-time addresses
    segments: tuple[Segment, ...] = ()  # PT_LOAD, for the load bias of a PIE


def go_version(fd: int, headers: ElfHeaders) -> tuple[int, int] | None:
    """(major, minor) from the build info (Go 1.18+ inline format)."""
    sec = headers.section(".go.buildinfo")
    places = [(sec.offset, min(sec.size, 4096))] if sec else [
        (p.offset, min(p.filesz, MAX_BUILDINFO_SCAN)) for p in headers.segments
        if p.type == 1 and p.filesz]
    for offset, size in places:
        data = _pread(fd, size, offset)
        at = data.find(BUILDINFO_MAGIC)
        while at >= 0 and at % 16:
            at = data.find(BUILDINFO_MAGIC, at + 1)
        if at < 0 or at + 33 > len(data) or not data[at + 15] & 2:
            continue
        n, pos = _uvarint(data, at + 32)
        text = data[pos:pos + min(n, 64)].decode("ascii", "replace")
        m = _VERSION.match(text)
        return (int(m.group(1)), int(m.group(2))) if m else None
    return None


def tls_offset(headers: ElfHeaders) -> int:
    """g's slot relative to the thread pointer: the executable's TLS block
    ends at it, runtime.tlsg first in the block (-8 without a PT_TLS)."""
    for p in headers.segments:
        if p.type == 7 and p.memsz:              # PT_TLS
            return -((p.memsz + 7) & ~7)
    return -8


def _code(fd: int, funcs: GoFunctions, name: str) -> bytes:
    """The first bytes (<= 256) of function ``name``'s code; b"" if absent."""
    entry = funcs.entry_of(name)
    if entry is None:
        return b""
    end = funcs.func_end(entry) or entry
    offset = funcs.file_offset(entry)
    return _pread(fd, min(end - entry, 256), offset) if offset is not None else b""


def _store_disp(code: bytes, prefix: bytes) -> int:
    """disp32 of the first ``prefix`` (REX, 89, ModRM) store in ``code``; 0 if none."""
    at = code.find(prefix)
    if at < 0 or at + 7 > len(code):
        return 0
    disp = struct.unpack_from("<i", code, at + 3)[0]
    return disp if 64 <= disp < 4096 else 0


def vdso_offsets(fd: int, funcs: GoFunctions) -> tuple[int, int]:
    """m.vdsoSP and m.vdsoPC from runtime.nanotime1's stores (``MOVQ DX,
    m_vdsoSP(BX)``, ``MOVQ CX, m_vdsoPC(BX)``, hand-written assembly); (0, 0)
    when not found."""
    code = _code(fd, funcs, "runtime.nanotime1")
    sp, pc = _store_disp(code, b"\x48\x89\x93"), _store_disp(code, b"\x48\x89\x8b")
    return (sp, pc) if sp and pc == sp + 8 else (0, 0)


def labels_offset(fd: int, funcs: GoFunctions) -> int:
    """Offset of g.labels from the store in runtime_setProfLabel; 0 if absent."""
    code = _code(fd, funcs, SET_LABEL_FUNCTION)
    for i in range(len(code) - 6):
        # REX.W+B (49 / 4d), MOV r/m64 r64 (89), ModRM mod=10 rm=110 (disp32(R14))
        if code[i] in (0x49, 0x4D) and code[i + 1] == 0x89 and code[i + 2] & 0xC7 == 0x86:
            disp = struct.unpack_from("<i", code, i + 3)[0]
            return disp if 64 <= disp < 4096 else 0
    return 0


def read_facts(fd: int) -> GoFacts | None:
    headers = read_headers(fd)
    if not is_go(headers, fd):
        return None
    version = go_version(fd, headers)
    if version is None or version < (1, 18):
        return None
    funcs = GoFunctions.open(fd)
    if funcs is None:
        return None
    try:
        labels = labels_offset(fd, funcs)
        vdso_sp, vdso_pc = vdso_offsets(fd, funcs)
        text = go_text(funcs)
    finally:
        funcs.close()
    kind = (LABELS_SLICE if version >= (1, 24) else LABELS_MAP) if labels else 0
    return GoFacts(version, tls_offset(headers), labels, kind, vdso_sp, vdso_pc, text,
                   tuple(load_segments(headers)))


def go_text(funcs: GoFunctions) -> tuple[int, int]:
    """[first function's entry, end of the last) of the pclntab: the Go code
    (a cgo build's C code lies outside it); (0, 0) without functions."""
    if funcs.nfunc <= 0:
        return (0, 0)
    return funcs.text_range()


def run_time_text(facts: GoFacts, exe: Mapping) -> tuple[int, int]:
    """``facts.text`` at its run-time addresses in a process that maps the
    executable at ``exe``; (0, 0) when no segment covers the mapping."""
    lo, hi = facts.text
    bias = load_bias(facts.segments, exe.start, exe.offset, exe.limit - exe.start)
    if not hi or bias is None:
        return (0, 0)
    return (lo + bias, hi + bias)


class GoLabels:
    """The receiver's side of bpf/golabels.h. ``table(name)`` gives a map with
    BCC's table subset (``t[k]``, ``t[k] = v``, ``del t[k]``, ``Key``/``Leaf``)."""

    def __init__(self, table: Callable[[str], Any], processes: ProcessCache, *,
                 fsbase_offset: int, refusals: Refusals | None = None) -> None:
        self._procs_map = table("go_procs")
        self._sets = table("go_label_sets")
        self._stacks = table("go_gstacks")
        self._procs = processes
        self._refusals = refusals or Refusals(None, log)
        self._lock = threading.Lock()
        self._registered: dict[int, GoFacts] = {}
        self._facts: LRUCache[tuple[int, ...], GoFacts | None] = LRUCache(1024)
        self._cache: LRUCache[int, tuple[tuple[str, str], ...]] = LRUCache(65536)
        self.unknown_sets = 0        # ids whose set was evicted before it was read
        self._put(SETTINGS_KEY, tls=fsbase_offset)

    def _put(self, pid: int, *, tls: int, facts: GoFacts | None = None,
             text: tuple[int, int] = (0, 0)) -> None:
        t = self._procs_map
        v = t.Leaf()
        v.tls_offset = tls
        if facts is not None:
            v.g_m, v.g_sched, v.g_stack_hi = G_M, G_SCHED, G_STACK_HI
            v.m_g0, v.m_curg = M_G0, M_CURG
            v.g_labels, v.labels_kind = facts.labels_offset, facts.labels_kind
            v.m_vdso_sp, v.m_vdso_pc = facts.vdso_sp, facts.vdso_pc
            v.text_lo, v.text_hi = text        # chain-keyed dedupe of stack copies
        t[t.Key(pid)] = v

    # -- processes -------------------------------------------------------------------
    def seen(self, pid: int) -> GoFacts | None:
        """Register ``pid`` if it runs a Go binary; its facts or None."""
        found = self._read(pid)
        if found is None:
            return None
        facts, exe = found
        with self._lock:
            self._registered[pid] = facts
        self._put(pid, tls=facts.tls_offset, facts=facts, text=run_time_text(facts, exe))
        return facts

    def exited(self, pid: int) -> None:
        with self._lock:
            if self._registered.pop(pid, None) is None:
                return
        try:
            del self._procs_map[self._procs_map.Key(pid)]
        except KeyError:
            pass

    def _read(self, pid: int) -> tuple[GoFacts, Mapping] | None:
        """The facts of ``pid``'s executable and the mapping of its start."""
        info = self._procs.get(pid)
        if info is None or not info.exe:
            return None
        exe = next((m for m in info.mappings if m.file == info.exe), None)
        if exe is None:
            return None
        mapped = open_mapped(pid, exe.file, exe.start, refusals=self._refusals)
        if mapped is None:
            return None
        with mapped:
            st = mapped.stat
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key in self._facts:
                hit = self._facts[key]
                return None if hit is None else (hit, exe)
            try:
                facts = read_facts(mapped.fd)
            except Refused as exc:
                self._refusals.note("go_binary", exc.reason, f"{exe.file}: {exc.detail}")
                facts = None
            except (OSError, ValueError, struct.error) as exc:
                log.debug("go labels: cannot read %s: %s", exe.file, exc)
                facts = None
            self._facts[key] = facts
            return None if facts is None else (facts, exe)

    # -- per sample ------------------------------------------------------------------
    def labels(self, set_id: int) -> tuple[tuple[str, str], ...]:
        """The label pairs of a sample's ``go_labels`` id (() when unknown);
        names the agent uses itself (RESERVED_PREFIXES) are dropped, counted."""
        if not set_id:
            return ()
        hit = self._cache.get(set_id)
        if hit is not None:
            return hit
        t = self._sets
        try:
            v = t[t.Key(set_id)]
        except KeyError:
            self.unknown_sets += 1
            return ()
        pairs = []
        for i in range(min(int(v.count), MAX_PAIRS)):
            p = v.pairs[i]
            key = bytes(p.key)[:min(int(p.key_len), LABEL_LEN)].decode("utf-8", "replace")
            value = bytes(p.value)[:min(int(p.value_len), LABEL_LEN)].decode("utf-8", "replace")
            if key.startswith(RESERVED_PREFIXES):
                self._refusals.note("go_labels", "reserved_label", f"{key!r}")
                continue
            pairs.append((key, value))
        result = tuple(sorted(dict(pairs).items()))
        self._cache[set_id] = result
        return result

    def goroutine_context(self, snap_id: int) -> SwitchContext | None:
        t = self._stacks
        k = t.Key(snap_id)
        try:        # kept (LRU): a copy may be unwound again once its tables are built
            v = t[k]
        except KeyError:
            return None
        n = min(int(v.len), len(v.data))
        return SwitchContext(int(v.pc), int(v.sp), int(v.bp), bytes(v.data)[:n])


def _pread(fd: int, size: int, offset: int) -> bytes:
    return os.pread(fd, max(0, size), offset)


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 35:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return value, pos

"""Go functions, files, lines and inlined calls from a binary's ``pclntab``:
what the Go runtime itself uses for tracebacks, present in stripped
(``-ldflags="-s -w"``) and ``-trimpath`` binaries alike.

Read in place (no Python object per function) from the agent's own sparse
copy of the bytes it needs, mapped (:mod:`.gopclntab_bytes`: the profiled
file itself is never mapped, its owner could truncate it under us). A
look-up bisects the function table and decodes the function's pc-value
tables (file, line, inline index) lazily up to the pc asked for
(:mod:`.gopclntab_pcvalue`), keeping them in an LRU bounded in entries.
Inlined calls come from ``FUNCDATA_InlTree`` indexed by
``PCDATA_InlTreeIndex``; each level's call site is the inline entry's own
(Go 1.16-1.19) or the position at its ``parentPc`` (1.20+), as the runtime
does it. Every offset is checked against its table; a malformed table raises
:class:`~telegen.untrusted.Refused` (``bad_gopclntab``).

``GoFunctions.open(fd or MappedFile)`` → ``lookup(vaddr)`` (innermost first),
``func_entry`` / ``func_end`` / ``sp_delta`` / ``entry_of(name)``;
``is_go(elf)`` is a cheap test on headers. Addresses are the binary's
link-time virtual addresses.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections import OrderedDict
from typing import NamedTuple

from telegen.procinfo.elfheaders import build_id_of, read_headers
from telegen.procinfo.maps import MappedFile
from telegen.symbols.gopclntab_bytes import FileBytes, copy_key, private_copy, stored_meta
from telegen.symbols.gopclntab_locate import (
    Pclntab,
    Segment,
    is_go,
    load_segments,
    locate,
    needed_ranges,
    tab_from_meta,
    vaddr_to_offset,
)
from telegen.symbols.gopclntab_pcvalue import PcValueTable
from telegen.untrusted import Refused

__all__ = ["GoFrame", "GoFunctions", "is_go"]

PCDATA_INL_TREE_INDEX = 2
FUNCDATA_INL_TREE = 3
MAX_INLINE_DEPTH = 64         # the inliner's own limits keep real chains < 20
MAX_NAME = 1 << 14            # bytes of one function or file name
MAX_PCDATA = 64               # npcdata of a real _func is ≤ 4
TABLE_CACHE_ENTRIES = 1 << 16  # decoded (pc, value) pairs kept per binary (16 bytes each)
NAME_CACHE = 4096


class GoFrame(NamedTuple):
    function: str
    file: str
    line: int


class _Func(NamedTuple):
    entry: int
    end: int
    name_off: int
    pcsp: int
    pcfile: int
    pcln: int
    cu_offset: int
    inl_index: int           # pc-value table offset, 0 when none
    inl_tree: int            # file offset of the inline tree, -1 when none
    inl_limit: int           # end of the file bytes of the segment holding it


class GoFunctions:
    """The pclntab of one Go binary, read in place. Thread-compatible (one
    user at a time; the caches are not locked)."""

    def __init__(self, data: mmap.mmap, tab: Pclntab, segments: list[Segment]) -> None:
        self._data = data
        self.tab = tab
        self._segments = segments
        e = tab.endian
        self._u32 = struct.Struct(e + "I")
        self._i32 = struct.Struct(e + "i")
        ptr = "Q" if tab.ptr_size == 8 else "I"
        self._ptr = struct.Struct(e + ptr)
        if tab.version == "1.16":
            self._ftab = struct.Struct(e + ptr + ptr)
            # entry, nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset,
            # funcID, pad[2], nfuncdata
            self._func = struct.Struct(e + ptr + "iiIIIIII" + "B2xB")
        else:
            self._ftab = struct.Struct(e + "II")
            start_line = "i" if tab.version == "1.20" else ""
            self._func = struct.Struct(e + "IiiIIIIII" + start_line + "BBxB")
        # inlinedCall: (nameoff, parentPc) offsets inside one entry
        self._inl_size, self._inl_name, self._inl_parent = (
            (16, 4, 8) if tab.version == "1.20" else (20, 12, 16))
        # keyed by (table, function entry): the linker shares identical tables between functions
        self._tables: OrderedDict[tuple[int, int], PcValueTable] = OrderedDict()
        self._table_entries = 0
        self._names: OrderedDict[int, str] = OrderedDict()
        self.version = tab.version
        self.nfunc = tab.nfunc
        self._name_at = tab.ptr_size if tab.version == "1.16" else 4   # _func.nameoff

    # -- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, source: int | MappedFile) -> GoFunctions | None:
        """The Go functions of the ELF file open on ``source`` (a descriptor,
        not taken over, or a :class:`MappedFile`); None when it has no
        pclntab. Refused when the file or its pclntab is malformed."""
        fd = source.fd if isinstance(source, MappedFile) else source
        headers = read_headers(fd)
        if not headers.file_size:
            return None
        segments = load_segments(headers)
        key = copy_key(build_id_of(fd, headers), fd)
        meta = stored_meta(key)
        tab = tab_from_meta(meta) if meta is not None else None
        if tab is None:
            tab = locate(FileBytes(fd, headers.file_size), headers)
            if tab is None:
                return None
        data = private_copy(fd, headers.file_size, needed_ranges(tab, segments), key,
                            {"tab": tab._asdict()})
        return cls(data, tab, segments)

    @classmethod
    def open_path(cls, path: str) -> GoFunctions | None:
        """A host file the agent trusts (tests, benches)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls.open(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._data.close()

    def memory_bytes(self) -> int:
        """An estimate of this reader's heap: decoded tables (16 bytes a
        pair, ~500 a table) and cached names. The mapped copy is page cache."""
        names = sum(len(n) + 150 for n in self._names.values())
        return 16 * self._table_entries + 500 * len(self._tables) + names + 1024

    # -- functions ---------------------------------------------------------------
    def _entry_at(self, i: int) -> int:
        entry = self._ftab.unpack_from(self._data, self.tab.pcln[0] + i * self._ftab.size)[0]
        return entry + self.tab.text_start if self.version != "1.16" else entry

    def text_range(self) -> tuple[int, int]:
        """[first function's entry, the functab's end): the Go code's addresses."""
        return self._entry_at(0), self._entry_at(self.tab.nfunc)

    def _index(self, vaddr: int) -> int:
        """Index of the function holding ``vaddr`` in the functab, -1 if none."""
        lo, hi = 0, self.tab.nfunc
        if hi == 0 or vaddr < self._entry_at(0) or vaddr >= self._entry_at(hi):
            return -1
        while hi - lo > 1:          # entry(lo) <= vaddr < entry(hi)
            mid = (lo + hi) // 2
            if self._entry_at(mid) <= vaddr:
                lo = mid
            else:
                hi = mid
        return lo if self._entry_at(lo) <= vaddr < self._entry_at(lo + 1) else -1

    def func_entry(self, vaddr: int) -> int | None:
        """Entry address of the function holding ``vaddr``; None outside Go code."""
        i = self._index(vaddr)
        return self._entry_at(i) if i >= 0 else None

    def func_end(self, vaddr: int) -> int | None:
        """End (the next function's entry) of the function holding ``vaddr``."""
        i = self._index(vaddr)
        return self._entry_at(i + 1) if i >= 0 else None

    def sp_delta(self, vaddr: int) -> int | None:
        """Bytes the function holding ``vaddr`` has pushed below its caller's
        SP at ``vaddr`` (its ``pcsp`` table); None outside Go code."""
        try:
            i = self._index(vaddr)
            if i < 0:
                return None
            f = self._function(i)
            value = self._value(f, f.pcsp, vaddr)
        except (struct.error, IndexError, ValueError, OverflowError) as exc:
            raise Refused("bad_gopclntab", f"at {vaddr:#x}: {exc}") from exc
        return None if value < 0 else value

    def entry_of(self, name: str) -> int | None:
        """Entry address of the function called ``name`` (a scan of the
        function table: for setting up, not per sample); None if absent."""
        start, end = self.tab.funcnames
        raw = name.encode() + b"\0"
        at = self._data.find(raw, start, end)
        while at > start and self._data[at - 1] != 0:    # a suffix of a longer name
            at = self._data.find(raw, at + 1, end)
        if at < 0:
            return None
        name_off = at - start
        base, limit = self.tab.pcln
        for i in range(self.nfunc):
            at = base + self._ftab.unpack_from(self._data, base + i * self._ftab.size)[1]
            if base < at <= limit - 16 and \
                    self._i32.unpack_from(self._data, at + self._name_at)[0] == name_off:
                return self._entry_at(i)
        return None

    def file_offset(self, vaddr: int) -> int | None:
        """Where ``vaddr`` is in the file (its loaded segment); None if nowhere."""
        return vaddr_to_offset(self._segments, vaddr)

    def _function(self, i: int) -> _Func:
        tab = self.tab
        base, limit = tab.pcln
        func_off = self._ftab.unpack_from(self._data, base + i * self._ftab.size)[1]
        at = base + func_off
        if func_off <= 0 or at + self._func.size > limit:
            raise Refused("bad_gopclntab", f"_func {i} at {func_off:#x} outside pclntable")
        f = self._func.unpack_from(self._data, at)
        name_off, pcsp, pcfile, pcln, npcdata, cu_offset = f[1], f[4], f[5], f[6], f[7], f[8]
        nfuncdata = f[-1]
        pcdata_at = at + self._func.size
        funcdata_at = pcdata_at + 4 * npcdata
        entry, end = self._entry_at(i), self._entry_at(i + 1)
        if npcdata > MAX_PCDATA or funcdata_at > limit or end <= entry:
            raise Refused("bad_gopclntab", f"_func {i}: {npcdata} pcdata tables, bounds")
        inl_index = 0
        if npcdata > PCDATA_INL_TREE_INDEX:
            inl_index = self._u32.unpack_from(self._data, pcdata_at + 4 * PCDATA_INL_TREE_INDEX)[0]
        inl_tree, inl_limit = -1, -1
        if nfuncdata > FUNCDATA_INL_TREE and inl_index:
            inl_tree, inl_limit = self._inline_tree(funcdata_at, limit, base)
        return _Func(entry, end, name_off, pcsp, pcfile, pcln, cu_offset, inl_index, inl_tree,
                     inl_limit)

    def _inline_tree(self, funcdata_at: int, limit: int, base: int) -> tuple[int, int]:
        """(file offset of this function's inline tree, end of its segment's
        file bytes); (-1, -1) when none or unknown."""
        if self.version == "1.16":   # absolute pointers, ptr-aligned inside the table
            ptr = self.tab.ptr_size
            at = base + ((funcdata_at - base + ptr - 1) & ~(ptr - 1)) + FUNCDATA_INL_TREE * ptr
            if at + ptr > limit:
                raise Refused("bad_gopclntab", "funcdata outside pclntable")
            vaddr = self._ptr.unpack_from(self._data, at)[0]
        else:
            at = funcdata_at + 4 * FUNCDATA_INL_TREE
            if at + 4 > limit:
                raise Refused("bad_gopclntab", "funcdata outside pclntable")
            off = self._u32.unpack_from(self._data, at)[0]
            if off == 0xFFFFFFFF or not self.tab.gofunc:
                return -1, -1
            vaddr = self.tab.gofunc + off
        for seg in self._segments if vaddr else ():
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset, seg.offset + seg.filesz
        return -1, -1

    # -- strings -----------------------------------------------------------------
    def _string(self, off: int, table: tuple[int, int]) -> str:
        start, end = table
        at = start + off
        if off < 0 or at >= end:
            raise Refused("bad_gopclntab", f"name offset {off:#x} outside its table")
        key = at
        hit = self._names.get(key)
        if hit is not None:
            return hit
        stop = self._data.find(b"\0", at, min(end, at + MAX_NAME))
        if stop < 0:
            raise Refused("bad_gopclntab", f"unterminated name at {at:#x}")
        name = self._data[at:stop].decode("utf-8", "replace")
        self._names[key] = name
        if len(self._names) > NAME_CACHE:
            self._names.popitem(last=False)
        return name

    def _file(self, f: _Func, pc: int) -> str:
        return self._cu_file(f, self._value(f, f.pcfile, pc))

    def _cu_file(self, f: _Func, index: int) -> str:
        if index < 0:
            return ""
        cu_start, cu_end = self.tab.cutab
        at = cu_start + 4 * (f.cu_offset + index)
        if at + 4 > cu_end:
            raise Refused("bad_gopclntab", f"file index {index} outside the CU table")
        file_off = self._u32.unpack_from(self._data, at)[0]
        return "" if file_off == 0xFFFFFFFF else self._string(file_off, self.tab.filetab)

    # -- pc-value tables ---------------------------------------------------------
    def _value(self, f: _Func, table: int, pc: int) -> int:
        """The value of pc-value table ``table`` (offset in pctab) at ``pc``; -1 if none."""
        if not table:
            return -1
        key = (table, f.entry)
        decoded = self._tables.get(key)
        if decoded is None:
            start, limit = self.tab.pctab[0] + table, self.tab.pctab[1]
            if start >= limit:
                raise Refused("bad_gopclntab", f"pc-value table {table:#x} outside pctab")
            decoded = self._tables[key] = PcValueTable(start, limit, f.entry, f.end,
                                                       self.tab.quantum)
        else:
            self._tables.move_to_end(key)
        before = len(decoded)
        value = decoded.value_at(self._data, pc)
        self._table_entries += len(decoded) - before
        while self._table_entries > TABLE_CACHE_ENTRIES and len(self._tables) > 1:
            _key, old = self._tables.popitem(last=False)
            self._table_entries -= len(old)
        return value

    # -- look-up -----------------------------------------------------------------
    def lookup(self, vaddr: int) -> list[GoFrame]:
        """Function, file and line at ``vaddr``, innermost (inlined) first,
        the function holding it last; [] outside Go code. Refused when the
        tables on the way are malformed."""
        try:
            return self._lookup(vaddr)
        except (struct.error, IndexError, ValueError, OverflowError) as exc:
            # every read is bounds-checked first: this is a net, not the check
            raise Refused("bad_gopclntab", f"at {vaddr:#x}: {exc}") from exc

    def _lookup(self, vaddr: int) -> list[GoFrame]:
        i = self._index(vaddr)
        if i < 0:
            return []
        f = self._function(i)
        frames: list[GoFrame] = []
        pc = vaddr
        call_site: tuple[str, int] | None = None
        for _ in range(MAX_INLINE_DEPTH):
            file, line = call_site or (self._file(f, pc), self._value(f, f.pcln, pc))
            ix = self._value(f, f.inl_index, pc) if f.inl_tree >= 0 else -1
            if ix < 0:
                frames.append(GoFrame(self._string(f.name_off, self.tab.funcnames), file, line))
                return frames
            at = f.inl_tree + ix * self._inl_size
            if ix > f.inl_limit or at + self._inl_size > f.inl_limit:
                raise Refused("bad_gopclntab", f"inline index {ix} outside its segment")
            name_off = self._i32.unpack_from(self._data, at + self._inl_name)[0]
            parent_pc = self._i32.unpack_from(self._data, at + self._inl_parent)[0]
            frames.append(GoFrame(self._string(name_off, self.tab.funcnames), file, line))
            if self._inl_size == 20:   # Go 1.16-1.19 entries name their call site
                file_index, call_line = struct.unpack_from(self.tab.endian + "ii", self._data,
                                                           at + 4)
                call_site = (self._cu_file(f, file_index), call_line)
            pc = f.entry + parent_pc
            if not f.entry <= pc < f.end:
                raise Refused("bad_gopclntab",
                              f"inline parent pc {parent_pc:#x} outside its function")
        raise Refused("bad_gopclntab", f"inline chain deeper than {MAX_INLINE_DEPTH}")


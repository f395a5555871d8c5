"""DWARF look-ups with pyelftools: function, file, line and inlined callers.

Only the compile unit (CU) holding an address is parsed, found through
``.debug_aranges`` or, when that misses, through the CUs' own address ranges
(an index built once from each CU's top DIE). A parsed CU becomes a small
index — function ranges with their inline trees, and the line table as sorted
arrays — kept in a per-file LRU, so later look-ups in that CU are bisects.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from typing import Any

from cachetools import LRUCache
from elftools.dwarf.die import DIE
from elftools.dwarf.ranges import BaseAddressEntry, RangeEntry

from telegen.symbols.elf import ElfFile

_FUNC_TAGS = ("DW_TAG_subprogram", "DW_TAG_inlined_subroutine")
_ADDR_FORMS = ("DW_FORM_addr", "DW_FORM_addrx", "DW_FORM_addrx1", "DW_FORM_addrx2",
               "DW_FORM_addrx3", "DW_FORM_addrx4", "DW_FORM_GNU_addr_index")

# (raw or mangled name, plain DW_AT_name, file, line, decl line), innermost first
DwarfLine = tuple[str, str, str, int, int]
UNINDEXED = object()    # lookup_indexed: the unit must be parsed first


class _Func:
    __slots__ = ("linkage", "name", "decl_line", "call_file", "call_line", "ranges", "children")

    def __init__(self, linkage: str, name: str, decl_line: int, call_file: int,
                 call_line: int, ranges: list[tuple[int, int]]) -> None:
        self.linkage, self.name, self.decl_line = linkage, name, decl_line
        self.call_file, self.call_line, self.ranges = call_file, call_line, ranges
        self.children: list[_Func] = []

    def contains(self, addr: int) -> bool:
        return any(lo <= addr < hi for lo, hi in self.ranges)


class _CUIndex:
    """Functions and line table of one CU."""

    def __init__(self, funcs: list[tuple[int, int, _Func]], rows: list[tuple[int, int, int]],
                 files: list[str]) -> None:
        funcs.sort(key=lambda f: (f[0], -f[1]))
        self.func_starts = [f[0] for f in funcs]
        self.funcs = funcs
        self.line_addrs = [r[0] for r in rows]
        self.rows = rows
        self.files = files

    def chain(self, addr: int) -> list[_Func]:
        """Outermost function first, then each inlined callee holding ``addr``."""
        i = bisect_right(self.func_starts, addr) - 1
        best: _Func | None = None
        for _ in range(16):   # top-level ranges rarely nest: look a few entries back
            if i < 0:
                break
            lo, hi, f = self.funcs[i]
            if lo <= addr < hi:
                best = f
                break
            i -= 1
        if best is None:
            return []
        out = [best]
        node = best
        while True:
            nxt = next((c for c in node.children if c.contains(addr)), None)
            if nxt is None:
                return out
            out.append(nxt)
            node = nxt

    def line_at(self, addr: int) -> tuple[str, int]:
        i = bisect_right(self.line_addrs, addr) - 1
        if i < 0:
            return "", 0
        _, file_idx, line = self.rows[i]
        if file_idx < 0:       # past an end_sequence: a gap in the table
            return "", 0
        return self.file(file_idx), line

    def file(self, idx: int) -> str:
        return self.files[idx] if 0 <= idx < len(self.files) else ""


class DwarfSymbols:
    """Address → (function, file, line) chains for one ELF file with DWARF."""

    def __init__(self, elf: ElfFile, *, max_cus: int = 64) -> None:
        self._elf = elf
        self._dwarf = elf.dwarf_info()     # sizes checked first; Refused when over the caps
        self._aranges: Any = None
        self._aranges_loaded = False
        self._cu_ranges: tuple[list[int], list[tuple[int, int, int]]] | None = None
        self._cus: LRUCache[int, _CUIndex] = LRUCache(max_cus)
        self._names: dict[int, tuple[str, str, int]] = {}

    def lookup_indexed(self, vaddr: int) -> list[DwarfLine] | None | object:
        """:meth:`lookup` when it needs no parsing (the unit holding ``vaddr``
        is indexed already), else :data:`UNINDEXED`."""
        if not self._aranges_loaded:
            return UNINDEXED
        cu_offset = self._arange_offset(vaddr)
        if cu_offset is None:
            if self._cu_ranges is None:
                return UNINDEXED
            cu_offset = self._range_offset(vaddr, *self._cu_ranges)
        if cu_offset is None:
            return None
        index = self._cus.get(cu_offset)
        return UNINDEXED if index is None else self._answer(index, vaddr)

    def lookup(self, vaddr: int) -> list[DwarfLine] | None:
        cu_offset = self._cu_offset(vaddr)
        if cu_offset is None:
            return None
        index = self._cus.get(cu_offset)
        if index is None:
            try:
                index = self._index_cu(cu_offset)
            except Exception:    # malformed unit: remembered as empty, not parsed again
                index = _CUIndex([], [], [])
            self._cus[cu_offset] = index
        return self._answer(index, vaddr)

    def _answer(self, index: _CUIndex, vaddr: int) -> list[DwarfLine] | None:
        chain = index.chain(vaddr)
        if not chain:
            return None
        file, line = index.line_at(vaddr)
        out: list[DwarfLine] = []
        for depth in range(len(chain) - 1, -1, -1):
            f = chain[depth]
            out.append((f.linkage or f.name, f.name, file, line, f.decl_line))
            file, line = index.file(f.call_file), f.call_line   # where f was inlined
        return out

    # -- finding the CU ------------------------------------------------------------
    def _cu_offset(self, vaddr: int) -> int | None:
        if not self._aranges_loaded:
            self._aranges_loaded = True
            try:
                self._aranges = self._dwarf.get_aranges()
            except Exception:
                self._aranges = None
        off = self._arange_offset(vaddr)
        return off if off is not None else self._range_offset(vaddr, *self._cu_range_index())

    def _arange_offset(self, vaddr: int) -> int | None:
        if self._aranges is not None and self._aranges.entries:
            try:
                off = self._aranges.cu_offset_at_addr(vaddr)
            except Exception:
                off = None
            if off is not None:
                return int(off)
        return None

    @staticmethod
    def _range_offset(vaddr: int, starts: list[int],
                      spans: list[tuple[int, int, int]]) -> int | None:
        i = bisect_right(starts, vaddr) - 1
        for _ in range(64):   # CU ranges may overlap (LTO); bounded look-back
            if i < 0:
                break
            lo, hi, off = spans[i]
            if lo <= vaddr < hi:
                return off
            i -= 1
        return None

    def _cu_range_index(self) -> tuple[list[int], list[tuple[int, int, int]]]:
        if self._cu_ranges is None:
            spans: list[tuple[int, int, int]] = []
            try:
                for cu in self._dwarf.iter_CUs():
                    try:
                        top = cu.get_top_DIE()
                        for lo, hi in self._ranges(top, cu_base=None):
                            spans.append((lo, hi, cu.cu_offset))
                    except Exception:
                        continue
            except Exception:    # a unit header past the end: the units before it stand
                pass
            spans.sort()
            self._cu_ranges = ([s[0] for s in spans], spans)
        return self._cu_ranges

    # -- indexing one CU -----------------------------------------------------------
    def _index_cu(self, cu_offset: int) -> _CUIndex:
        """One pass over the unit's DIEs in file order (``iter_DIEs``: each step
        moves forward by the DIE's size and stops at the unit's end).
        ``DW_AT_sibling`` is never followed — ``iter_children`` jumps to it,
        and a sibling pointing backwards made that walk loop forever."""
        cu = self._dwarf.get_CU_at(cu_offset)
        top = cu.get_top_DIE()
        funcs: list[tuple[int, int, _Func]] = []
        owners: list[_Func | None] = []     # the innermost function of each open level
        for child in cu.iter_DIEs():
            if child is top:
                if top.has_children:
                    owners.append(None)
                continue
            if child.is_null():
                if owners:
                    owners.pop()
                continue
            parent = owners[-1] if owners else None
            tag = child.tag
            owner = parent
            if tag in _FUNC_TAGS:
                ranges = self._ranges(child)
                if ranges:
                    f = self._make_func(child, ranges)
                    if tag == "DW_TAG_subprogram" or parent is None:
                        funcs.extend((lo, hi, f) for lo, hi in ranges)
                    else:
                        parent.children.append(f)
                    owner = f
            if child.has_children:
                owners.append(owner)
        rows, files = self._line_table(cu, top)
        return _CUIndex(funcs, rows, files)

    def _make_func(self, die: DIE, ranges: list[tuple[int, int]]) -> _Func:
        linkage, name, decl_line = self._names_of(die)
        attrs = die.attributes
        call_file = attrs["DW_AT_call_file"].value if "DW_AT_call_file" in attrs else -1
        call_line = attrs["DW_AT_call_line"].value if "DW_AT_call_line" in attrs else 0
        return _Func(linkage, name, decl_line, call_file, call_line, ranges)

    def _names_of(self, die: DIE) -> tuple[str, str, int]:
        """(linkage name, name, decl line), following abstract_origin/specification."""
        key = die.offset
        hit = self._names.get(key)
        if hit is not None:
            return hit
        linkage = name = ""
        decl_line = 0
        cur: DIE | None = die
        for _ in range(6):
            if cur is None:
                break
            attrs = cur.attributes
            if not linkage:
                for a in ("DW_AT_linkage_name", "DW_AT_MIPS_linkage_name"):
                    if a in attrs:
                        linkage = _text(attrs[a].value)
                        break
            if not name and "DW_AT_name" in attrs:
                name = _text(attrs["DW_AT_name"].value)
            if not decl_line and "DW_AT_decl_line" in attrs:
                decl_line = int(attrs["DW_AT_decl_line"].value)
            if linkage and name:
                break
            ref = next((a for a in ("DW_AT_abstract_origin", "DW_AT_specification")
                        if a in attrs), None)
            try:
                cur = cur.get_DIE_from_attribute(ref) if ref else None
            except Exception:
                cur = None
        result = (linkage, name, decl_line)
        self._names[key] = result
        return result

    def _ranges(self, die: DIE, cu_base: int | None = None) -> list[tuple[int, int]]:
        attrs = die.attributes
        if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
            lo = attrs["DW_AT_low_pc"].value
            high = attrs["DW_AT_high_pc"]
            hi = high.value if high.form in _ADDR_FORMS else lo + high.value
            return [(lo, hi)] if hi > lo else []
        if "DW_AT_ranges" not in attrs:
            return []
        lists = self._dwarf.range_lists()
        if lists is None:
            return []
        if cu_base is None:
            top_attrs = die.cu.get_top_DIE().attributes
            cu_base = top_attrs["DW_AT_low_pc"].value if "DW_AT_low_pc" in top_attrs else 0
        base = cu_base
        out = []
        cu: Any = die.cu
        for entry in lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
            elif isinstance(entry, RangeEntry):
                lo, hi = entry.begin_offset, entry.end_offset
                if not entry.is_absolute:
                    lo, hi = lo + base, hi + base
                if hi > lo:
                    out.append((lo, hi))
        return out

    def _line_table(self, cu: Any, top: DIE) -> tuple[list[tuple[int, int, int]], list[str]]:
        lp = self._dwarf.line_program_for_CU(cu)
        if lp is None:
            return [], []
        comp_dir = _text(top.attributes["DW_AT_comp_dir"].value) \
            if "DW_AT_comp_dir" in top.attributes else ""
        header = lp.header
        v5 = header.version >= 5
        dirs = [_text(d) for d in header.include_directory]
        files: list[str] = [] if v5 else [""]   # DWARF < 5 file numbers start at 1
        for entry in header.file_entry:
            name = _text(entry.name)
            di = entry.dir_index
            if v5:   # directory 0 is the compilation directory; others are relative to it
                d = dirs[di] if di < len(dirs) else ""
                if di and dirs:
                    d = os.path.join(dirs[0], d)
            else:
                d = comp_dir if di == 0 else (dirs[di - 1] if di - 1 < len(dirs) else "")
                if di and comp_dir:
                    d = os.path.join(comp_dir, d)
            path = os.path.join(d, name)
            files.append(os.path.normpath(path) if path else "")
        rows: list[tuple[int, int, int, int]] = []
        for entry in lp.get_entries():
            st = entry.state
            if st is None:
                continue
            if st.end_sequence:
                rows.append((st.address, 0, -1, 0))
            else:
                rows.append((st.address, 1, st.file, st.line))
        rows.sort(key=lambda r: (r[0], r[1]))
        return [(a, f, ln) for a, _, f, ln in rows], files


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

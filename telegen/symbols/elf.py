"""ELF reading: build-id, PT_LOAD segments, .gnu_debuglink and function symbol
tables (.symtab / .dynsym) as sorted arrays for bisect look-ups.

pyelftools reads headers, sections and notes; the symbol entries themselves are
unpacked with ``struct.iter_unpack`` because going through pyelftools' per-symbol
objects is ~20x slower (libc's .dynsym cold load would otherwise cost ~100 ms).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from typing import BinaryIO, NamedTuple

from elftools.elf.elffile import ELFFile

_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_SHN_UNDEF = 0
_BIND_RANK = {1: 0, 2: 1, 0: 2}   # GLOBAL before WEAK before LOCAL


class Segment(NamedTuple):
    vaddr: int
    offset: int
    filesz: int
    memsz: int


class SymbolTable:
    """Function symbols of one table, sorted by address. ``lookup`` is a bisect.

    Aliases at one address collapse to the most readable name: fewest leading
    underscores, then GLOBAL > WEAK > LOCAL, then the shortest
    (``nanosleep`` rather than ``__nanosleep`` / ``__GI___nanosleep``).
    """

    __slots__ = ("starts", "ends", "names")

    def __init__(self, entries: list[tuple[int, int, str, int]]) -> None:
        # entries: (address, size, name, bind)
        entries.sort(key=lambda e: (e[0], len(e[2]) - len(e[2].lstrip("_")),
                                    _BIND_RANK.get(e[3], 3), len(e[2])))
        starts: list[int] = []
        sizes: list[int] = []
        names: list[str] = []
        for addr, size, name, _bind in entries:
            if starts and starts[-1] == addr:
                sizes[-1] = max(sizes[-1], size)
                continue
            starts.append(addr)
            sizes.append(size)
            names.append(name)
        ends = []
        for i, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            if size:
                ends.append(start + size)
            else:  # unsized symbol: it runs up to the next one
                ends.append(starts[i + 1] if i + 1 < len(starts) else start + 1)
        self.starts = starts
        self.ends = ends
        self.names = names

    def __len__(self) -> int:
        return len(self.starts)

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(name, symbol start) of the function holding ``vaddr``, or None."""
        i = bisect_right(self.starts, vaddr) - 1
        if i < 0 or vaddr >= self.ends[i]:
            return None
        return self.names[i], self.starts[i]


class ElfFile:
    """One opened ELF file (executable, shared library or separate debug file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "rb")  # noqa: SIM115 (kept open for lazy reads)
        try:
            self.elf = ELFFile(self._fh)
        except Exception:
            self._fh.close()
            raise
        self.segments = [
            Segment(s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"])
            for s in self.elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        self.build_id = _build_id(self.elf)
        self._tables: dict[str, SymbolTable | None] = {}

    def close(self) -> None:
        self._fh.close()

    # -- addresses -----------------------------------------------------------------
    def offset_to_vaddr(self, offset: int) -> int | None:
        """The link-time virtual address of a file offset (PT_LOAD headers)."""
        for seg in self.segments:
            if seg.offset <= offset < seg.offset + max(seg.filesz, 1):
                return offset - seg.offset + seg.vaddr
        for seg in self.segments:  # .bss-like tail: offset past filesz but inside memsz
            if seg.offset <= offset < seg.offset + seg.memsz:
                return offset - seg.offset + seg.vaddr
        return None

    # -- sections ------------------------------------------------------------------
    def has_section(self, name: str) -> bool:
        return self.elf.get_section_by_name(name) is not None

    @property
    def has_dwarf(self) -> bool:
        sec = self.elf.get_section_by_name(".debug_info")
        return sec is not None and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"] > 0

    def debuglink(self) -> tuple[str, int] | None:
        """(file name, CRC32) from .gnu_debuglink, or None."""
        sec = self.elf.get_section_by_name(".gnu_debuglink")
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            return None
        data = sec.data()
        end = data.find(b"\0")
        if end <= 0:
            return None
        crc_at = (end + 4) & ~3
        if len(data) < crc_at + 4:
            return None
        fmt = "<I" if self.elf.little_endian else ">I"
        return data[:end].decode("utf-8", "replace"), struct.unpack_from(fmt, data, crc_at)[0]

    def symbols(self, section: str) -> SymbolTable | None:
        """Function symbols of ``.symtab`` or ``.dynsym``; None when absent or empty."""
        if section not in self._tables:
            self._tables[section] = self._read_symbols(section)
        return self._tables[section]

    def _read_symbols(self, name: str) -> SymbolTable | None:
        sec = self.elf.get_section_by_name(name)
        if sec is None or sec["sh_type"] == "SHT_NOBITS" or not sec["sh_size"]:
            return None
        strtab = self.elf.get_section(sec["sh_link"]).data()
        data = sec.data()
        endian = "<" if self.elf.little_endian else ">"
        if self.elf.elfclass == 64:
            fmt, order = endian + "IBBHQQ", (0, 1, 3, 4, 5)
        else:
            fmt, order = endian + "IIIBBH", (0, 3, 5, 1, 2)
        entsize = struct.calcsize(fmt)
        usable = len(data) - len(data) % entsize
        n_name, n_info, n_shndx, n_value, n_size = order
        entries: list[tuple[int, int, str, int]] = []
        for ent in struct.iter_unpack(fmt, memoryview(data)[:usable]):
            info = ent[n_info]
            if (info & 0xF) not in (_STT_FUNC, _STT_GNU_IFUNC) or ent[n_shndx] == _SHN_UNDEF:
                continue
            value = ent[n_value]
            if not value:
                continue
            off = ent[n_name]
            sym = strtab[off:strtab.find(b"\0", off)].decode("utf-8", "replace")
            at = sym.find("@")  # versioned names in some tables: memcpy@@GLIBC_2.14
            entries.append((value, ent[n_size], sym[:at] if at > 0 else sym, info >> 4))
        return SymbolTable(entries) if entries else None


def _build_id(elf: ELFFile) -> str:
    for sec in elf.iter_sections():
        if sec["sh_type"] != "SHT_NOTE":
            continue
        for note in sec.iter_notes():  # type: ignore[attr-defined]
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_NOTE":
            continue
        for note in seg.iter_notes():  # type: ignore[attr-defined]
            if note["n_type"] == "NT_GNU_BUILD_ID":
                return str(note["n_desc"])
    return ""


def read_build_id(path: str) -> str:
    """The GNU build-id of an ELF file as hex, '' when it has none."""
    with open(path, "rb") as fh:
        return _build_id(ELFFile(fh))

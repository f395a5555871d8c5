"""ELF reading: build-id, PT_LOAD segments, .gnu_debuglink and function symbol
tables (.symtab / .dynsym) as sorted arrays for bisect look-ups.

Headers and notes are read by :mod:`telegen.procinfo.elfheaders`, sections
straight from the file; the symbol entries are unpacked with ``struct``
because going through pyelftools' per-symbol objects is ~20x slower (libc's
.dynsym cold load would otherwise cost ~100 ms). pyelftools is imported only
for DWARF and compressed sections (:attr:`ElfFile.elf`): the long-lived agent
reads symbol tables only, and pyelftools costs ~5 MB resident once imported
(#21; DWARF indexes are built in a child, :mod:`telegen.symbols.symindex`).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import zlib
from array import array
from bisect import bisect_right
from operator import itemgetter
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from telegen.procinfo.elfheaders import (
    PT_LOAD,
    SHT_NOBITS,
    SectionHeader,
    build_id_of,
    read_build_id_fd,
    read_headers,
)
from telegen.procinfo.maps import open_host_file
from telegen.symbols.budget import DEFAULT_LIMITS, ParseLimits
from telegen.untrusted import Refused

if TYPE_CHECKING:          # imported where used (#21): ~5 MB resident once imported
    from elftools.dwarf.dwarfinfo import DWARFInfo
    from elftools.elf.elffile import ELFFile

_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_SHN_UNDEF = 0
_BIND_RANK = {1: 0, 2: 1, 0: 2}   # GLOBAL before WEAK before LOCAL
MAX_DEBUGLINK = 4096              # a file name and a CRC
_MAX_ADDRESS = (1 << 64) - 1


class Segment(NamedTuple):
    vaddr: int
    offset: int
    filesz: int
    memsz: int


_ADDRESS = itemgetter(0)
# st_info -> 1 when its type (low 4 bits) is STT_FUNC or STT_GNU_IFUNC, else 0
_FUNCTION_INFO = bytes(1 if (b & 0xF) in (_STT_FUNC, _STT_GNU_IFUNC) else 0 for b in range(256))


def _alias_rank(e: tuple[int, int, str, int]) -> tuple[bool, int, int, int]:
    """Of aliases at one address, the lowest is kept (SymbolTable)."""
    name = e[2]
    return (e[1] == 0, len(name) - len(name.lstrip("_")), _BIND_RANK.get(e[3], 3), len(name))


class SymbolTable:
    """Function symbols of one table, sorted by address. ``lookup`` is a bisect.

    Aliases at one address collapse to the most readable name: a sized
    symbol before an empty one (libpython's ``_PyEval_EvalFrameDefault.cold``,
    not the empty ``ast2obj_expr.cold`` at the same address), fewest leading
    underscores, then GLOBAL > WEAK > LOCAL, then the shortest
    (``nanosleep`` rather than ``__nanosleep`` / ``__GI___nanosleep``).
    """

    __slots__ = ("starts", "ends", "_text", "_offsets")

    def __init__(self, entries: list[tuple[int, int, str, int]]) -> None:
        # entries: (address, size, name, bind). Sorted by address alone (a C-level
        # key: a Python key per symbol was most of a table's first-sight cost, 174k
        # calls for a changing host's minute); the alias rank only where an address
        # repeats, the first of equals winning as in a stable sort on the full key.
        entries.sort(key=_ADDRESS)
        starts: list[int] = []
        sizes: list[int] = []
        names: list[str] = []
        best: tuple[int, int, str, int] | None = None    # the kept alias at starts[-1]
        for entry in entries:
            addr, size, name, _bind = entry
            if starts and starts[-1] == addr:
                if size > sizes[-1]:
                    sizes[-1] = size
                assert best is not None
                if _alias_rank(entry) < _alias_rank(best):
                    best = entry
                    names[-1] = name
                continue
            best = entry
            starts.append(addr)
            sizes.append(size)
            names.append(name)
        ends = []
        for i, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            if size:
                ends.append(min(start + size, _MAX_ADDRESS))
            else:  # unsized symbol: it runs up to the next one
                ends.append(starts[i + 1] if i + 1 < len(starts) else start + 1)
        # flat arrays and one string: ~20 bytes a symbol plus its name, where
        # lists of ints and strs cost ~100 (libjvm's 57 000 symbols: 2.5 vs 9 MB)
        self.starts = array("Q", starts)
        self.ends = array("Q", ends)
        offsets = array("Q", [0])
        pos = 0
        for name in names:
            pos += len(name)
            offsets.append(pos)
        self._offsets = offsets
        self._text = "".join(names)

    def __len__(self) -> int:
        return len(self.starts)

    def name(self, i: int) -> str:
        return self._text[self._offsets[i]:self._offsets[i + 1]]

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self.starts))]

    def memory_bytes(self) -> int:
        return (self.starts.itemsize * len(self.starts) * 2 + 8 * len(self._offsets)
                + sys.getsizeof(self._text))

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """(name, symbol start) of the function holding ``vaddr``, or None."""
        i = bisect_right(self.starts, vaddr) - 1
        if i < 0 or vaddr >= self.ends[i]:
            return None
        return self.name(i), self.starts[i]


class ElfFile:
    """One opened ELF file (executable, shared library or separate debug file).

    ``source`` is a descriptor (duplicated: the caller keeps and closes its
    own) — how every file of a profiled process is passed — or a path of a
    host file the agent trusts. ``name`` is the file's path where its process
    sees it (debug-link look-ups start from its directory). Headers are
    checked first (:func:`~telegen.procinfo.elfheaders.read_headers`); section
    contents larger than ``limits.max_section_bytes`` are never read (the
    section is treated as absent and named in :attr:`skipped`)."""

    def __init__(self, source: str | int, *, name: str = "",
                 limits: ParseLimits = DEFAULT_LIMITS) -> None:
        fd = os.dup(source) if isinstance(source, int) else open_host_file(source)
        self.path = name or (source if isinstance(source, str) else "")
        self.limits = limits
        self.skipped: list[str] = []
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused("not_regular", f"{self.path}: mode {stat.filemode(st.st_mode)}")
            self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            self.headers = read_headers(fd, st.st_size)
            self.build_id = build_id_of(fd, self.headers)
            self._fh: BinaryIO = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        self._elf: ELFFile | None = None
        self.segments = [Segment(p.vaddr, p.offset, p.filesz, p.memsz)
                         for p in self.headers.segments if p.type == PT_LOAD]
        self._tables: dict[str, SymbolTable | None] = {}

    @property
    def fd(self) -> int:
        return self._fh.fileno()

    @property
    def elf(self) -> ELFFile:
        """pyelftools' view of the file, made (and pyelftools imported) on
        first use: for DWARF and compressed sections only."""
        if self._elf is None:
            from elftools.elf.elffile import ELFFile
            self._elf = ELFFile(self._fh)
        return self._elf

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
        return self.headers.section(name) is not None

    def section_data(self, name: str, limit: int | None = None) -> bytes | None:
        """The content of section ``name`` (inflated when compressed); None when
        absent, ``SHT_NOBITS``, or declaring more than ``limit`` (default
        ``limits.max_section_bytes``) — checked before anything is read."""
        index = next((i for i, s in enumerate(self.headers.sections) if s.name == name), -1)
        return self._data(index, limit) if index >= 0 else None

    def _data(self, index: int, limit: int | None = None) -> bytes | None:
        if not 0 < index < len(self.headers.sections):
            return None
        hdr = self.headers.sections[index]
        if hdr.type in (SHT_NOBITS, 0):
            return None
        cap = self.limits.max_section_bytes if limit is None else limit
        if hdr.data_size > cap:
            self.skipped.append(f"{hdr.name}: {hdr.data_size} bytes > {cap}")
            return None
        if hdr.compressed:
            return self.elf.get_section(index).data()
        return _read_at(self.fd, hdr.size, hdr.offset)

    @property
    def has_dwarf(self) -> bool:
        sec = self.headers.section(".debug_info") or self.headers.section(".zdebug_info")
        return sec is not None and sec.type != SHT_NOBITS and sec.size > 0

    def dwarf_info(self) -> DWARFInfo:
        """pyelftools' DWARF of this file, which reads every DWARF section (and
        ``.eh_frame``) into memory, after :meth:`check_dwarf_sizes`. Links to
        other files (``.gnu_debugaltlink``) are never followed."""
        self.check_dwarf_sizes()
        return self.elf.get_dwarf_info(relocate_dwarf_sections=False, follow_links=False)

    def check_dwarf_sizes(self) -> None:
        """Refused (``section_too_large`` / ``dwarf_too_large``) unless each
        DWARF section is under ``max_section_bytes`` and all together under
        ``max_dwarf_bytes``; old-style ``.zdebug`` sections are inflated once,
        bounded, to check what they declare. Nothing is kept."""
        total = 0
        for hdr in self.headers.sections:
            if not hdr.name.startswith((".debug", ".zdebug", ".eh_frame", ".gnu_debugaltlink")):
                continue
            size = hdr.data_size
            if hdr.name.startswith(".zdebug") and hdr.type != SHT_NOBITS:
                size = self._zdebug_size(hdr)
            if size > self.limits.max_section_bytes:
                raise Refused("section_too_large", f"{self.path}: {hdr.name} is {size} bytes")
            total += size
        if total > self.limits.max_dwarf_bytes:
            raise Refused("dwarf_too_large", f"{self.path}: {total} bytes of DWARF")

    def _zdebug_size(self, hdr: SectionHeader) -> int:
        """What a ``.zdebug`` section (``ZLIB`` + 8-byte size + deflate) inflates
        to, counted without keeping it, stopping past the cap."""
        cap = self.limits.max_section_bytes
        head = os.pread(self.fd, 12, hdr.offset)
        if len(head) < 12 or head[:4] != b"ZLIB":
            return 0       # pyelftools refuses it on its own (assertion): no allocation
        declared = struct.unpack(">Q", head[4:])[0]
        if declared > cap:
            return declared
        d = zlib.decompressobj()
        total, pos, end = 0, hdr.offset + 12, hdr.offset + hdr.size
        try:
            while pos < end and total <= cap:
                chunk = os.pread(self.fd, min(1 << 16, end - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                buf = chunk
                while buf and total <= cap:
                    total += len(d.decompress(buf, 1 << 20))
                    buf = d.unconsumed_tail
        except zlib.error:
            return 0
        return max(total, declared)

    def debuglink(self) -> tuple[str, int] | None:
        """(file name, CRC32) from .gnu_debuglink, or None."""
        data = self.section_data(".gnu_debuglink", MAX_DEBUGLINK)
        if data is None:
            return None
        end = data.find(b"\0")
        if end <= 0:
            return None
        crc_at = (end + 4) & ~3
        if len(data) < crc_at + 4:
            return None
        fmt = "<I" if self.headers.little else ">I"
        return data[:end].decode("utf-8", "replace"), struct.unpack_from(fmt, data, crc_at)[0]

    def symbols(self, section: str) -> SymbolTable | None:
        """Function symbols of ``.symtab`` or ``.dynsym``; None when absent or empty."""
        if section not in self._tables:
            self._tables[section] = self._read_symbols(section)
        return self._tables[section]

    def _read_symbols(self, name: str) -> SymbolTable | None:
        index = next((i for i, s in enumerate(self.headers.sections) if s.name == name), -1)
        data = self._data(index) if index > 0 else None
        if not data:
            return None
        strtab = self._data(self.headers.sections[index].link)
        if strtab is None:
            return None
        endian = "<" if self.headers.little else ">"
        if self.headers.is64:
            fmt, order = endian + "IBBHQQ", (0, 1, 3, 4, 5)
        else:
            fmt, order = endian + "IIIBBH", (0, 3, 5, 1, 2)
        entsize = struct.calcsize(fmt)
        count = len(data) // entsize
        n_name, n_info, n_shndx, n_value, n_size = order
        # the st_info bytes of every entry in one slice, mapped to 1 for functions:
        # only those are unpacked (a table's objects, files and sections are not)
        info_at = 4 if self.headers.is64 else 12
        functions = bytes(data[info_at:count * entsize:entsize]).translate(_FUNCTION_INFO)
        unpack = struct.Struct(fmt).unpack_from
        entries: list[tuple[int, int, str, int]] = []
        i = functions.find(1)
        while i >= 0:
            ent = unpack(data, i * entsize)
            i = functions.find(1, i + 1)
            value = ent[n_value]
            if not value or ent[n_shndx] == _SHN_UNDEF:
                continue
            off = ent[n_name]
            end = strtab.find(b"\0", off)
            sym = strtab[off:end if end >= 0 else len(strtab)].decode("utf-8", "replace")
            at = sym.find("@")  # versioned names in some tables: memcpy@@GLIBC_2.14
            entries.append((value, ent[n_size], sym[:at] if at > 0 else sym, ent[n_info] >> 4))
        return SymbolTable(entries) if entries else None


def _read_at(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer at the end of the file)."""
    parts: list[bytes] = []
    while size > 0:
        part = os.pread(fd, size, offset)
        if not part:
            break
        parts.append(part)
        size -= len(part)
        offset += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_build_id(path: str) -> str:
    """The GNU build-id of the ELF file at host path ``path`` as hex, '' when
    it has none (or is not ELF)."""
    fd = open_host_file(path)
    try:
        return read_build_id_fd(fd)
    finally:
        os.close(fd)

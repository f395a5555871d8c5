"""The headers of an untrusted ELF file, read with ``struct`` from a descriptor
and checked before anything (pyelftools included) believes them.

A profiled process chooses the bytes of every file it maps. What is checked
here, once per file and in O(number of headers):

- the ELF identification, and header entry sizes that are exactly the
  standard ones (an ``e_shentsize`` of 0 makes pyelftools read one header
  again and again, up to a count taken from the file);
- at most :data:`MAX_SECTIONS` sections and :data:`MAX_SEGMENTS` segments,
  every header table inside the file;
- every section with file data (not ``SHT_NOBITS``) inside the file;
- the *declared* size of each section's content: ``sh_size``, or for an
  ``SHF_COMPRESSED`` section the ``ch_size`` of its compression header (what
  pyelftools would allocate and inflate to). Callers compare it with their
  cap before asking for the data (:attr:`SectionHeader.data_size`).

Build-ids are read here too (notes, bounded), without pyelftools: this runs
for every mapping of every profiled process.
"""

from __future__ import annotations

import os
import re
import struct
from typing import NamedTuple

from telegen.untrusted import Refused

MAX_SECTIONS = 1 << 16
MAX_SEGMENTS = 1 << 12
MAX_SHSTRTAB = 1 << 20
MAX_NOTES = 1 << 16        # bytes of one note section/segment read for the build-id
SHT_NOBITS, SHT_NOTE = 8, 7
PT_LOAD, PT_NOTE = 1, 4
SHF_COMPRESSED = 0x800
NT_GNU_BUILD_ID = 3
_SHN_XINDEX = 0xFFFF
_HEX = re.compile(r"[0-9a-f]{2,128}")


class SectionHeader(NamedTuple):
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int          # bytes in the file (sh_size)
    link: int
    data_size: int     # bytes of content once read: ch_size when compressed

    @property
    def compressed(self) -> bool:
        return bool(self.flags & SHF_COMPRESSED)


class ProgramHeader(NamedTuple):
    type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class ElfHeaders(NamedTuple):
    little: bool
    is64: bool
    file_size: int
    sections: list[SectionHeader]
    segments: list[ProgramHeader]

    def section(self, name: str) -> SectionHeader | None:
        return next((s for s in self.sections if s.name == name), None)


def valid_build_id(build_id: str) -> bool:
    """A build-id as it may become part of a path: 2..128 lowercase hex digits,
    an even number of them."""
    return bool(_HEX.fullmatch(build_id)) and len(build_id) % 2 == 0


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise Refused("bad_elf", f"{size} bytes at {offset}: file too short")
    return data


def read_headers(fd: int, file_size: int | None = None) -> ElfHeaders:
    """The checked headers of the ELF file open on ``fd``; ``Refused("bad_elf")``
    for anything malformed or out of bounds."""
    size = os.fstat(fd).st_size if file_size is None else file_size
    ident = os.pread(fd, 16, 0)
    if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) \
            or ident[5] not in (1, 2):
        raise Refused("bad_elf", "not an ELF file")
    is64, little = ident[4] == 2, ident[5] == 1
    e = "<" if little else ">"
    if is64:
        (phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack(
            e + "32xQQ4x2xHHHHH", _pread(fd, 64, 0))
        sh_fmt, sh_size, ph_fmt, ph_size = e + "IIQQQQIIQQ", 64, e + "IIQQQQQQ", 56
    else:
        (phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack(
            e + "28xII4x2xHHHHH", _pread(fd, 52, 0))
        sh_fmt, sh_size, ph_fmt, ph_size = e + "IIIIIIIIII", 40, e + "IIIIIIII", 32
    segments = _segments(fd, size, phoff, phnum, phentsize, ph_fmt, ph_size, is64)
    sections = _sections(fd, size, shoff, shnum, shentsize, shstrndx, sh_fmt, sh_size, e, is64)
    return ElfHeaders(little, is64, size, sections, segments)


def _table(size: int, off: int, num: int, entsize: int, want: int, what: str) -> None:
    if num and entsize != want:
        raise Refused("bad_elf", f"{what} entry size {entsize} != {want}")
    if off + num * entsize > size:
        raise Refused("bad_elf", f"{what} table past the end of the file")


def _segments(fd: int, size: int, phoff: int, phnum: int, entsize: int, fmt: str,
              want: int, is64: bool) -> list[ProgramHeader]:
    if phnum > MAX_SEGMENTS:
        raise Refused("bad_elf", f"{phnum} segments > {MAX_SEGMENTS}")
    _table(size, phoff, phnum, entsize, want, "program header")
    raw = _pread(fd, phnum * want, phoff) if phnum else b""
    out = []
    for ent in struct.iter_unpack(fmt, raw):
        if is64:
            p_type, _flags, off, vaddr, _paddr, filesz, memsz, _align = ent
        else:
            p_type, off, vaddr, _paddr, filesz, memsz, _flags, _align = ent
        out.append(ProgramHeader(p_type, off, vaddr, filesz, memsz))
    return out


def _sections(fd: int, size: int, shoff: int, shnum: int, entsize: int, shstrndx: int,
              fmt: str, want: int, e: str, is64: bool) -> list[SectionHeader]:
    if not shoff:
        return []
    if entsize != want:
        raise Refused("bad_elf", f"section header entry size {entsize} != {want}")
    first = struct.unpack(fmt, _pread(fd, want, shoff))
    if shnum == 0:           # extended numbering: the count is section 0's sh_size
        shnum = first[5]
    if shstrndx == _SHN_XINDEX:
        shstrndx = first[6]
    if shnum > MAX_SECTIONS:
        raise Refused("bad_elf", f"{shnum} sections > {MAX_SECTIONS}")
    _table(size, shoff, shnum, entsize, want, "section header")
    raw = struct.iter_unpack(fmt, _pread(fd, shnum * want, shoff))
    rows = [(n, t, fl, a, o, sz, lk) for n, t, fl, a, o, sz, lk, _i, _al, _es in raw]
    names = b""
    if 0 < shstrndx < shnum:
        _n, t, _f, _a, off, sz, _l = rows[shstrndx]
        if t != SHT_NOBITS and sz <= MAX_SHSTRTAB and off + sz <= size:
            names = _pread(fd, sz, off)
    chdr = struct.Struct(e + ("IIQQ" if is64 else "III"))
    out = []
    for name_off, sh_type, flags, addr, off, sz, link in rows:
        end = names.find(b"\0", name_off)
        name = names[name_off:end].decode("utf-8", "replace") if end >= 0 else ""
        data_size = sz
        if sh_type != SHT_NOBITS and sh_type != 0:
            if off + sz > size:
                raise Refused("bad_elf", f"section {name!r} past the end of the file")
            if flags & SHF_COMPRESSED:
                if sz < chdr.size:
                    raise Refused("bad_elf", f"section {name!r}: no compression header")
                fields = chdr.unpack(_pread(fd, chdr.size, off))
                data_size = fields[2] if is64 else fields[1]
        out.append(SectionHeader(name, sh_type, flags, addr, off, sz, link, data_size))
    return out


def build_id_of(fd: int, headers: ElfHeaders) -> str:
    """The NT_GNU_BUILD_ID note as lowercase hex ('' when none): note sections
    first, then PT_NOTE segments (files stripped of section headers)."""
    desc = find_note(fd, headers, b"GNU", NT_GNU_BUILD_ID)
    bid = desc.hex() if desc else ""
    return bid if valid_build_id(bid) else ""


def find_note(fd: int, headers: ElfHeaders, name: bytes, n_type: int) -> bytes | None:
    """The descriptor of the first note ``name``/``n_type`` in the note
    sections, then the PT_NOTE segments; at most ``MAX_NOTES`` bytes read
    per place. None when there is none."""
    places = [(s.offset, s.size) for s in headers.sections
              if s.type == SHT_NOTE and not s.compressed]
    places += [(p.offset, p.filesz) for p in headers.segments if p.type == PT_NOTE]
    e = "<" if headers.little else ">"
    for off, sz in places:
        if off + sz > headers.file_size:
            continue
        found = _note(os.pread(fd, min(sz, MAX_NOTES), off), e, name, n_type)
        if found is not None:
            return found
    return None


def _note(data: bytes, e: str, name: bytes, n_type: int) -> bytes | None:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, typ = struct.unpack_from(e + "III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if desc_at + descsz > len(data):
            return None
        if typ == n_type and data[name_at:name_at + namesz].rstrip(b"\0") == name:
            return data[desc_at:desc_at + descsz]
        pos = end
    return None


def read_build_id_fd(fd: int) -> str:
    """The build-id of the ELF file open on ``fd`` ('' for none, or not ELF)."""
    try:
        return build_id_of(fd, read_headers(fd))
    except (Refused, OSError, struct.error):
        return ""

"""Where a Go binary's runtime tables are: the ``pclntab`` header and the
``runtime.firstmoduledata`` that points back at it.

The pclntab is found by its section (``.gopclntab``; ``.data.rel.ro.gopclntab``
after some external linkers) or, when there is none — stripped of section
headers, or merged into ``.data.rel.ro`` by an external linker, as in
``/usr/local/bin/docker`` — by scanning the loaded segments for its magic
followed by a header whose fields are sane. The moduledata is found by scanning
the loaded segments for a pointer to the header whose next words are the
header's own tables (``funcnametab``, ``cutab``, ``filetab``, ``pctab``,
``pclntable``, ``ftab``): it gives each table's exact length and, for Go
≥ 1.18, ``gofunc`` (the base of ``FUNCDATA`` offsets, where inline trees are).
A pclntab found by scanning is believed only with a moduledata confirming it.

Layouts (read from Go's ``runtime/symtab.go`` and ``runtime2.go``):
magic ``0xfffffffa`` Go 1.16/1.17, ``0xfffffff0`` 1.18/1.19, ``0xfffffff1``
1.20+. The Go 1.2–1.15 layout (``0xfffffffb``) is not read.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from telegen.procinfo.elfheaders import PT_LOAD, SHT_NOBITS, ElfHeaders, find_note
from telegen.symbols.gopclntab_bytes import FileBytes
from telegen.untrusted import Refused

MAGICS = {0xFFFFFFFA: "1.16", 0xFFFFFFF0: "1.18", 0xFFFFFFF1: "1.20"}
PCLNTAB_SECTIONS = (".gopclntab", ".data.rel.ro.gopclntab")
_GO_SECTIONS = (".gopclntab", ".go.buildinfo", ".note.go.buildid")
_NT_GO_BUILD_ID = 4
MAX_FUNCS = 1 << 22          # Kubernetes-sized binaries have ~10^5
MAX_SCAN_HITS = 4096         # magic or pointer candidates checked per segment
# moduledata word index of gofunc (after text..enoptrbss; 1.20 added covctrs/ecovctrs)
_GOFUNC_WORD = {"1.18": 38, "1.20": 40}


def is_go(elf: ElfHeaders | object, fd: int | None = None) -> bool:
    """Whether an ELF file is a Go binary: a Go section, or (no section
    headers) the Go build-id note. ``elf`` is an ``ElfFile`` or its
    ``ElfHeaders`` (then pass ``fd`` for the note look-up)."""
    headers = elf if isinstance(elf, ElfHeaders) else getattr(elf, "headers", None)
    if not isinstance(headers, ElfHeaders):
        return False
    if any(s.name in _GO_SECTIONS for s in headers.sections):
        return True
    fd = fd if fd is not None else getattr(elf, "fd", None)
    if fd is None or headers.sections:
        return False
    return find_note(fd, headers, b"Go", _NT_GO_BUILD_ID) is not None


class Segment(NamedTuple):
    vaddr: int
    offset: int
    filesz: int


class Pclntab(NamedTuple):
    """Where the tables are, as file offsets into the mapped binary, each
    with its end (exclusive). All checked to lie inside the file."""

    version: str              # "1.16" | "1.18" | "1.20"
    endian: str               # struct prefix "<" or ">"
    ptr_size: int
    quantum: int              # minLC: instruction size unit of pc deltas
    nfunc: int
    text_start: int           # vaddr functab entries are relative to (1.18+)
    funcnames: tuple[int, int]
    cutab: tuple[int, int]
    filetab: tuple[int, int]
    pctab: tuple[int, int]
    pcln: tuple[int, int]     # functab then the _func records
    gofunc: int               # vaddr of go:func.* (1.18+), 0 when unknown
    vaddr: int                # vaddr of the header
    offset: int               # file offset of the header
    found_by: str             # "section" | "scan"


def load_segments(headers: ElfHeaders) -> list[Segment]:
    return [Segment(p.vaddr, p.offset, p.filesz) for p in headers.segments
            if p.type == PT_LOAD and p.filesz and p.offset + p.filesz <= headers.file_size]


def vaddr_to_offset(segments: list[Segment], vaddr: int, size: int = 1) -> int | None:
    """The file offset of ``[vaddr, vaddr+size)`` when it lies in one segment's file bytes."""
    for seg in segments:
        if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
            return vaddr - seg.vaddr + seg.offset
    return None


def offset_to_vaddr(segments: list[Segment], offset: int) -> int | None:
    for seg in segments:
        if seg.offset <= offset < seg.offset + seg.filesz:
            return offset - seg.offset + seg.vaddr
    return None


class _Header(NamedTuple):
    version: str
    endian: str
    ptr_size: int
    quantum: int
    nfunc: int
    text_start: int
    offsets: tuple[int, int, int, int, int]   # funcname, cu, filetab, pctab, pcln


def _parse_header(data: FileBytes, at: int, limit: int, endian: str) -> _Header | None:
    """The header at file offset ``at`` if sane, its tables before ``limit``."""
    if at + 8 > limit:
        return None
    version = MAGICS.get(data.unpack(struct.Struct(endian + "I"), at)[0])
    if version is None:
        return None
    pad1, pad2, quantum, ptr = data.read(at + 4, 4)
    if pad1 or pad2 or quantum not in (1, 2, 4) or ptr not in (4, 8):
        return None
    nwords = 8 if version != "1.16" else 7
    if at + 8 + nwords * ptr > limit:
        return None
    words = data.unpack(struct.Struct(endian + ("Q" if ptr == 8 else "I") * nwords), at + 8)
    nfunc = words[0]
    text_start = words[2] if version != "1.16" else 0
    offsets = words[3:8] if version != "1.16" else words[2:7]
    if not 0 < nfunc <= MAX_FUNCS:
        return None
    if list(offsets) != sorted(offsets) or offsets[0] < 8 + nwords * ptr \
            or at + offsets[4] >= limit:
        return None
    entry = 8 if version != "1.16" else 2 * ptr
    if at + offsets[4] + (nfunc + 1) * entry > limit:
        return None
    return _Header(version, endian, ptr, quantum, nfunc, text_start, tuple(offsets))  # type: ignore[arg-type]


class _ModuleData(NamedTuple):
    lengths: tuple[int, int, int, int, int]   # bytes of funcname, cu, filetab, pctab, pcln
    gofunc: int


def _find_moduledata(data: FileBytes, segments: list[Segment], hdr: _Header,
                     vaddr: int) -> _ModuleData | None:
    """The moduledata pointing at the header at ``vaddr``, confirmed by its
    table pointers (header vaddr + each header offset) and ``ftab`` length."""
    e, ptr = hdr.endian, hdr.ptr_size
    word = "Q" if ptr == 8 else "I"
    needle = struct.pack(e + word, vaddr)
    nwords = _GOFUNC_WORD.get(hdr.version, 37) + 1
    fmt = struct.Struct(e + word * nwords)
    want = [vaddr + off for off in hdr.offsets]
    for seg in reversed(segments):     # the data segments come last
        pos, end, hits = seg.offset, seg.offset + seg.filesz, 0
        while hits < MAX_SCAN_HITS:
            pos = data.find(needle, pos, end)
            if pos < 0:
                break
            hits += 1
            if pos % ptr == 0 and pos + fmt.size <= end:
                w = data.unpack(fmt, pos)
                if [w[1], w[4], w[7], w[10], w[13]] == want and w[16] == want[4] \
                        and w[17] == hdr.nfunc + 1:
                    lengths = (w[2], w[5] * 4, w[8], w[11], w[14])
                    gofunc = w[_GOFUNC_WORD[hdr.version]] if hdr.version in _GOFUNC_WORD else 0
                    return _ModuleData(lengths, gofunc)
            pos += 1
    return None


def _tables(hdr: _Header, at: int, limit: int, md: _ModuleData | None,
            ) -> tuple[tuple[int, int], ...]:
    """(start, end) file offsets of funcname, cu, filetab, pctab, pcln tables:
    the moduledata's lengths when known, else up to the next table."""
    starts = [at + off for off in hdr.offsets]
    out = []
    for i, start in enumerate(starts):
        following = starts[i + 1] if i + 1 < len(starts) else limit
        # the moduledata's slice lengths (cutab's counts bytes, not entries, in
        # the linkers seen), never past the next table
        end = min(start + md.lengths[i], following) if md is not None else following
        if end > limit or end < start:
            raise Refused("bad_gopclntab", f"table {i} [{start:#x}, {end:#x}) outside {limit:#x}")
        out.append((start, end))
    return tuple(out)


def locate(data: FileBytes, headers: ElfHeaders) -> Pclntab | None:
    """The pclntab of the binary read through ``data``; None when it has none.
    Refused when a ``.gopclntab`` section is there but malformed."""
    segments = load_segments(headers)
    for sec in headers.sections:
        if sec.name in PCLNTAB_SECTIONS and sec.type not in (0, SHT_NOBITS) \
                and not sec.compressed:
            limit = sec.offset + sec.size
            hdr = _parse_header(data, sec.offset, limit, "<" if headers.little else ">")
            if hdr is None:
                raise Refused("bad_gopclntab", f"{sec.name}: no sane header")
            vaddr = sec.addr or offset_to_vaddr(segments, sec.offset) or 0
            md = _find_moduledata(data, segments, hdr, vaddr) if vaddr else None
            return _result(hdr, sec.offset, limit, md, vaddr, "section")
    return _scan(data, segments, headers.little)


def _scan(data: FileBytes, segments: list[Segment], little: bool) -> Pclntab | None:
    """Look for a header by its magic in every loaded segment (no section).
    Little-endian: one pass for ``?? ff ff ff 00 00`` (the three magics share it)."""
    if little:
        needles, back = [b"\xff\xff\xff\x00\x00"], 1
    else:
        needles, back = [struct.pack(">I", m) + b"\0\0" for m in MAGICS], 0
    for seg in segments:
        end = seg.offset + seg.filesz
        for needle in needles:
            pos, hits = seg.offset + back, 0
            while hits < MAX_SCAN_HITS:
                pos = data.find(needle, pos, end)
                if pos < 0:
                    break
                hits += 1
                at = pos - back
                hdr = _parse_header(data, at, end, "<" if little else ">") \
                    if at % 4 == 0 else None
                if hdr is not None:
                    vaddr = at - seg.offset + seg.vaddr
                    md = _find_moduledata(data, segments, hdr, vaddr)
                    if md is not None:    # a lone magic is not believed
                        return _result(hdr, at, end, md, vaddr, "scan")
                pos += 1
    return None


def _result(hdr: _Header, at: int, limit: int, md: _ModuleData | None, vaddr: int,
            found_by: str) -> Pclntab:
    funcnames, cutab, filetab, pctab, pcln = _tables(hdr, at, limit, md)
    entry = 8 if hdr.version != "1.16" else 2 * hdr.ptr_size
    if pcln[0] + (hdr.nfunc + 1) * entry > pcln[1]:
        raise Refused("bad_gopclntab", f"functab of {hdr.nfunc} entries past its table")
    return Pclntab(hdr.version, hdr.endian, hdr.ptr_size, hdr.quantum, hdr.nfunc,
                   hdr.text_start, funcnames, cutab, filetab, pctab, pcln,
                   md.gofunc if md is not None else 0, vaddr, at, found_by)


def needed_ranges(tab: Pclntab, segments: list[Segment]) -> list[tuple[int, int]]:
    """File ranges a reader of ``tab`` touches: the header and its tables,
    and the data of the inline trees — from ``go:func.*`` to the end of its
    segment (Go ≥ 1.18), or every segment (1.16: absolute pointers)."""
    ranges = [(tab.offset, tab.pcln[1])]
    if tab.gofunc:
        for seg in segments:
            if seg.vaddr <= tab.gofunc < seg.vaddr + seg.filesz:
                ranges.append((tab.gofunc - seg.vaddr + seg.offset, seg.offset + seg.filesz))
    elif tab.version == "1.16":
        ranges += [(seg.offset, seg.offset + seg.filesz) for seg in segments]
    return ranges


def tab_from_meta(meta: dict[str, object]) -> Pclntab | None:
    """The located tables stored with the agent's own copy (JSON)."""
    raw = meta.get("tab")
    if not isinstance(raw, dict) or set(raw) != set(Pclntab._fields):
        return None
    return Pclntab._make(tuple(raw[k]) if isinstance(raw[k], list) else raw[k]
                         for k in Pclntab._fields)

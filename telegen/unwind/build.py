"""Building an :class:`~telegen.unwind.table.UnwindTable` from an ELF file's CFI.

The section is decoded straight from its bytes by :mod:`telegen.unwind.cfi`
(no pyelftools objects); each row is reduced to the three things an x86-64
unwinder needs (CFA, saved rbp, saved return address) and nothing else is
kept. It runs once per object file (then the table is cached by build-id and
file content, see :mod:`telegen.unwind.cache`), never on the sampling hot path.

``.eh_frame`` is used when present (it is what the C++ runtime itself
unwinds with, so it covers every function of a normal build); otherwise
``.debug_frame`` (binaries built with ``-fno-asynchronous-unwind-tables -g``;
zlib-compressed sections are inflated, bounded by :data:`MAX_CFI_BYTES`).

Where it runs: in the agent under a :class:`~telegen.symbols.budget.Budget`
(:func:`build_table`: tests, tools, the synchronous
:meth:`~telegen.unwind.cache.TableCache.get`), or in the builder child
(:mod:`telegen.unwind.builder`: ``nice 19``, ``RLIMIT_CPU``/``RLIMIT_AS`` per
object) for the pipeline. The child maps the section with ``mmap``; in the
agent the section is read with ``pread`` (a mapped file that its owner
truncates would raise SIGBUS in the reader).
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import struct
import zlib
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

# Imports stay light: the builder child loads this module without the
# symbolizer and procinfo packages (see telegen.unwind.builder.CHILD_BOOT).
from telegen.procinfo.elfheaders import (
    SHT_NOBITS,
    ElfHeaders,
    SectionHeader,
    build_id_of,
    read_headers,
)
from telegen.untrusted import Refused
from telegen.unwind.cfi import CfiBomb, RelRows, fde_rows
from telegen.unwind.table import NO_RULE, Rule, Segment, UnwindTable

if TYPE_CHECKING:
    from telegen.symbols.budget import ParseLimits

log = logging.getLogger(__name__)

PT_LOAD = 1
ELFCOMPRESS_ZLIB = 1
# The decoder takes ~0.3 s of CPU per MiB of .eh_frame (libjvm: 1.4 MiB);
# bigger sections are decoded too, within the CPU budget of the build.
MAX_CFI_BYTES = 64 << 20
CFI_CPU_S = 20.0                   # the whole build is one step of this budget
SECTIONS = (".eh_frame", ".debug_frame")
_CHDR64 = struct.Struct("<IIQQ")


def cfi_limits() -> ParseLimits:
    from telegen.symbols.budget import ParseLimits

    return ParseLimits(step_cpu_s=CFI_CPU_S, object_cpu_s=CFI_CPU_S)


def build_table(source: str | int, *, name: str = "",
                limits: ParseLimits | None = None) -> UnwindTable:
    """The unwind table of an ELF file (empty when it has no CFI): ``source``
    is a descriptor (a profiled process's file, see
    :func:`~telegen.procinfo.maps.open_mapped`) or a host path. The whole
    build is one budgeted step (:class:`~telegen.symbols.budget.Budget`):
    over it, :class:`~telegen.symbols.budget.Rejected` is raised (``memory``
    for a CFI bomb)."""
    from telegen.symbols.budget import Budget, Rejected

    budget = Budget(limits or cfi_limits(), name or str(source))
    try:
        return budget.run(_build, source, name)
    except CfiBomb as exc:
        raise Rejected("memory", f"{name or source}: {exc}") from None


def _build(source: str | int, name: str) -> UnwindTable:
    from telegen.procinfo.maps import open_host_file

    fd = os.dup(source) if isinstance(source, int) else open_host_file(source)
    try:
        return table_from_fd(fd, name=name or str(source))
    finally:
        os.close(fd)


def table_from_fd(fd: int, *, name: str = "", use_mmap: bool = False,
                  max_bytes: int = MAX_CFI_BYTES,
                  sections: tuple[str, ...] = SECTIONS) -> UnwindTable:
    """The table of the ELF file open on ``fd`` from the first of ``sections``
    it has. ``Refused`` for a file that is not a regular ELF file;
    :class:`~telegen.unwind.cfi.CfiBomb` for a CFI bomb."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not_regular", f"{name}: mode {stat.filemode(st.st_mode)}")
    headers = read_headers(fd, st.st_size)
    build_id = build_id_of(fd, headers)
    segments = [Segment(p.vaddr, p.offset, p.filesz)
                for p in headers.segments if p.type == PT_LOAD]
    for section in sections:
        hdr = headers.section(section)
        if hdr is None or hdr.type == SHT_NOBITS:
            continue
        if hdr.data_size > max_bytes:
            log.info("%s: %s is %d bytes, over the %d limit: no CFI table",
                     name, section, hdr.data_size, max_bytes)
            break
        data = section_bytes(fd, headers, hdr, max_bytes, use_mmap=use_mmap)
        if not data:
            continue
        try:
            starts, indices, rules = assemble(data, hdr.addr, eh=section == ".eh_frame",
                                              name=name)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
        return UnwindTable(starts, indices, rules, segments, build_id=build_id, source=section)
    return UnwindTable(array("Q"), array("I"), [], segments, build_id=build_id)


def section_bytes(fd: int, headers: ElfHeaders, hdr: SectionHeader, max_bytes: int, *,
                  use_mmap: bool = False) -> bytes | mmap.mmap | None:
    """The content of one section (inflated when zlib-compressed): ``pread``,
    or a read-only ``mmap`` of its pages with ``use_mmap``."""
    if hdr.size == 0 or hdr.offset + hdr.size > headers.file_size:
        return None
    if not hdr.compressed:
        if use_mmap:
            base = hdr.offset & ~(mmap.ALLOCATIONGRANULARITY - 1)
            view = mmap.mmap(fd, hdr.offset + hdr.size - base, prot=mmap.PROT_READ,
                             offset=base)
            if base == hdr.offset:
                return view
            data = view[hdr.offset - base:]
            view.close()
            return data
        return os.pread(fd, hdr.size, hdr.offset)
    raw = os.pread(fd, hdr.size, hdr.offset)
    if not headers.is64 or not headers.little or len(raw) < _CHDR64.size:
        return None
    ch_type, _reserved, ch_size, _align = _CHDR64.unpack_from(raw, 0)
    if ch_type != ELFCOMPRESS_ZLIB or ch_size > max_bytes:
        return None
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw[_CHDR64.size:], ch_size)
    except zlib.error:
        return None
    return out


def assemble(data: bytes | mmap.mmap, address: int, *, eh: bool,
             name: str = "") -> tuple[array[int], array[int], list[Rule]]:
    """The sorted, gap-marked rows of one CFI section: what
    :class:`~telegen.unwind.table.TableBuilder` makes, on flat arrays of
    rule indices. FDEs are sorted by start and their rows expanded straight
    into the arrays (no object per row: libjvm has ~240k); only when FDEs
    overlap are all rows sorted, as TableBuilder does."""
    skipped = [0]
    interned: dict[Rule, int] = {}
    fdes = list(fde_rows(data, address, eh=eh, rules=interned, skipped=skipped))
    if skipped[0]:
        log.debug("%s: %d FDEs could not be decoded", name, skipped[0])
    fdes.sort(key=_first)
    none = interned.setdefault(NO_RULE, len(interned))
    out = _emit(_expanded(fdes), none)
    if out is None:                        # overlapping FDEs: sort every row
        out = _emit(iter(sorted(_expanded(fdes, check=False), key=_first)), none)
        assert out is not None
    starts, indices = out
    by_index = list(interned)
    order: dict[int, int] = {}
    rules: list[Rule] = []
    for i, idx in enumerate(indices):      # rules numbered in order of use
        new = order.get(idx)
        if new is None:
            new = order[idx] = len(rules)
            rules.append(by_index[idx])
        indices[i] = new
    return starts, indices, rules


_UNSORTED = (-1, -1, -1)


def _expanded(fdes: list[tuple[int, int, RelRows]], *,
              check: bool = True) -> Iterator[tuple[int, int, int]]:
    """The rows ``(lo, hi, rule index)`` of ``fdes`` clipped to their FDE;
    with ``check``, :data:`_UNSORTED` as soon as they are not in order."""
    prev = -1
    for start, end, rel in fdes:
        for delta, next_delta, idx in rel:
            lo = start + delta
            hi = end if next_delta < 0 else start + next_delta
            if hi > end:
                hi = end
            if hi > lo:
                if check:
                    if lo < prev:
                        yield _UNSORTED
                        return
                    prev = lo
                yield lo, hi, idx


def _emit(rows: Iterator[tuple[int, int, int]],
          none: int) -> tuple[array[int], array[int]] | None:
    starts: array[int] = array("Q")
    indices: array[int] = array("I")
    end_prev = -1
    last_at, last_idx = -1, -1
    for lo, hi, idx in rows:
        if lo < 0:
            return None
        if end_prev >= 0 and lo > end_prev:                 # a gap: no CFI
            if last_idx != none:
                starts.append(end_prev)
                indices.append(none)
                last_at, last_idx = end_prev, none
        if last_at == lo:
            indices[-1] = last_idx = idx
        elif last_idx != idx:
            starts.append(lo)
            indices.append(idx)
            last_at, last_idx = lo, idx
        if hi > end_prev:
            end_prev = hi
    if end_prev >= 0:
        if last_at == end_prev:
            indices[-1] = none
        elif last_idx != none:
            starts.append(end_prev)
            indices.append(none)
    return starts, indices


def _first(row: tuple[int, int, int] | tuple[int, int, RelRows]) -> int:
    return row[0]

"""The former unwind-table build through pyelftools' CFI objects, kept as a
reference: ``tests/unit/unwind/test_cfi_decoder.py`` checks that the decoder
of :mod:`telegen.unwind.cfi` gives the same tables on real libraries, and
``bench/cfi_build.py`` measures both side by side. Not used by the agent.

pyelftools decodes the CIE/FDE instructions into rows (pc, CFA rule,
register rules); each row is reduced to the three things an x86-64 unwinder
needs (CFA, saved rbp, saved return address); ``.eh_frame`` first, then
``.debug_frame``; sections over 4 MiB are not decoded (~3 s of CPU per MiB).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from elftools.dwarf.callframe import FDE, CallFrameInfo
from elftools.dwarf.structs import DWARFStructs

from telegen.procinfo.elfheaders import SHT_NOBITS
from telegen.symbols.budget import Budget, ParseLimits
from telegen.symbols.elf import ElfFile
from telegen.unwind.table import (
    OUTERMOST,
    PLT,
    RBP,
    RSP,
    UNSUPPORTED,
    Rule,
    Segment,
    TableBuilder,
    UnwindTable,
)

log = logging.getLogger(__name__)

REG_RBP, REG_RSP, REG_RA = 6, 7, 16
# DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litN; DW_OP_ge; ...
_PLT_PREFIX = [0x77, 8, 0x80, 0, 0x3F, 0x1A]
_DW_OP_LIT0 = 0x30
_DW_CFA_GNU_ARGS_SIZE = 0x2E
# Decoding CFI with pyelftools costs ~3 s per MiB: bigger sections (browsers,
# huge C++ binaries) are not decoded; their frames fall back to frame pointers.
MAX_CFI_BYTES = 4 << 20
# the whole build is one step: 4 MiB of CFI may take ~12 s of CPU
CFI_LIMITS = ParseLimits(step_cpu_s=20.0, object_cpu_s=20.0)
SECTIONS = (".eh_frame", ".debug_frame")


def pyelftools_table(source: str | int, *, name: str = "", limits: ParseLimits = CFI_LIMITS,
                     sections: tuple[str, ...] = SECTIONS) -> UnwindTable:
    """The unwind table of an ELF file (empty when it has no CFI): ``source``
    is a descriptor (a profiled process's file, see
    :func:`~telegen.procinfo.maps.open_mapped`) or a host path. The whole
    build is one budgeted step (:class:`~telegen.symbols.budget.Budget`):
    over it, :class:`~telegen.symbols.budget.Rejected` is raised."""
    budget = Budget(limits, name or str(source))
    return budget.run(_build, source, name, limits, sections)


def _build(source: str | int, name: str, limits: ParseLimits,
           sections: tuple[str, ...]) -> UnwindTable:
    elf = ElfFile(source, name=name, limits=limits)
    try:
        return table_from_elf(elf, sections)
    finally:
        elf.close()


def table_from_elf(elf: ElfFile, sections: tuple[str, ...] = SECTIONS) -> UnwindTable:
    segments = [Segment(s.vaddr, s.offset, s.filesz) for s in elf.segments]
    builder = TableBuilder()
    source = ""
    entries: list[Any] = []
    try:
        for name in sections:
            hdr = elf.headers.section(name)
            if hdr is None or hdr.type == SHT_NOBITS:
                continue
            if hdr.data_size > MAX_CFI_BYTES:
                log.info("%s: %s is %d bytes, over the %d limit: no CFI table",
                         elf.path, name, hdr.data_size, MAX_CFI_BYTES)
                return builder.build(segments, build_id=elf.build_id)
            data = elf.section_data(name, MAX_CFI_BYTES)
            if not data:
                continue
            cfi = CallFrameInfo(stream=io.BytesIO(data), size=len(data), address=hdr.addr,
                                base_structs=DWARFStructs(
                                    little_endian=elf.headers.little, dwarf_format=32,
                                    address_size=8 if elf.headers.is64 else 4),
                                for_eh_frame=name == ".eh_frame")
            entries, source = cfi.get_entries(), name
            break
    except Exception as exc:   # no or unreadable CFI: the table stays empty
        log.debug("%s: cannot read CFI: %s", elf.path, exc)
    skipped = 0
    for entry in entries:
        if not isinstance(entry, FDE):
            continue
        try:
            _add_fde(builder, entry)
        except Exception:      # an opcode pyelftools cannot decode: that range has no rule
            skipped += 1
    if skipped:
        log.debug("%s: %d FDEs could not be decoded", elf.path, skipped)
    return builder.build(segments, build_id=elf.build_id, source=source)


def _add_fde(builder: TableBuilder, fde: FDE) -> None:
    # DW_CFA_GNU_args_size (outgoing argument bytes, for exception landing pads)
    # does not change the CFA; pyelftools' table decoder rejects it, so drop it.
    if any(i.opcode == _DW_CFA_GNU_ARGS_SIZE for i in fde.instructions):
        fde.instructions = [i for i in fde.instructions if i.opcode != _DW_CFA_GNU_ARGS_SIZE]
    start = fde.header["initial_location"]
    end = start + fde.header["address_range"]
    rows = fde.get_decoded().table
    for i, row in enumerate(rows):
        row_end = rows[i + 1]["pc"] if i + 1 < len(rows) else end
        builder.add(row["pc"], min(row_end, end), row_rule(row))


def row_rule(row: dict[Any, Any]) -> Rule:
    """One decoded CFI row as a compact rule (see :mod:`telegen.unwind.table`)."""
    ra = row.get(REG_RA)
    if ra is None or ra.type == "UNDEFINED":
        return (OUTERMOST, 0, 0, 0)
    if ra.type != "OFFSET":
        return (UNSUPPORTED, 0, 0, 0)
    ra_off = int(ra.arg)
    rbp = row.get(REG_RBP)
    rbp_off = int(rbp.arg) if rbp is not None and rbp.type == "OFFSET" else 0
    if rbp is not None and rbp.type not in ("OFFSET", "SAME_VALUE", "UNDEFINED"):
        return (UNSUPPORTED, 0, 0, 0)
    cfa = row["cfa"]
    if cfa.expr is not None:
        expr = list(cfa.expr)
        if expr[:6] == _PLT_PREFIX and len(expr) > 6 and \
                _DW_OP_LIT0 <= expr[6] < _DW_OP_LIT0 + 32:
            return (PLT, expr[6] - _DW_OP_LIT0, rbp_off, ra_off)
        return (UNSUPPORTED, 0, 0, 0)
    if cfa.reg == REG_RSP:
        return (RSP, int(cfa.offset), rbp_off, ra_off)
    if cfa.reg == REG_RBP:
        return (RBP, int(cfa.offset), rbp_off, ra_off)
    return (UNSUPPORTED, 0, 0, 0)

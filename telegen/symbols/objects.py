"""Everything known about one object file: the binary, its separate debug file
(local or from debuginfod) and their DWARF, queried in priority order."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from telegen.procinfo.maps import MappedFile
from telegen.symbols.budget import DEFAULT_LIMITS, Budget, ParseLimits, Rejected
from telegen.symbols.debugfile import DebugFile, find_by_build_id, find_debug_file
from telegen.symbols.debuginfod import DebuginfodClient
from telegen.symbols.dwarf import UNINDEXED, DwarfLine, DwarfSymbols
from telegen.symbols.elf import ElfFile, SymbolTable
from telegen.untrusted import Refusals, Refused

log = logging.getLogger(__name__)

# A raw answer: (source, [(raw name, plain name, file, line, decl line), ...] innermost first)
RawAnswer = tuple[str, list[DwarfLine]]


class ObjectSymbols:
    """Symbols of one object. Look-up order for an address:

    DWARF of the binary → DWARF of the debug file → binary ``.symtab`` →
    debug file ``.symtab`` → binary ``.dynsym``. Answers from the debug file are
    labelled ``debuginfo_file`` (found on disk) or ``debuginfod`` (downloaded).

    ``mapped`` is the binary, open (a profiled process's file: never reopened
    by path). Every parse step — opening, reading tables, indexing one DWARF
    unit at look-up time — runs under one :class:`~telegen.symbols.budget.Budget`;
    over it the object is :attr:`rejected` (with the reason) and answers nothing.
    """

    def __init__(self, mapped: MappedFile | None, build_id: str, *, debug_dirs: Sequence[str],
                 debuginfod: DebuginfodClient | None = None,
                 limits: ParseLimits = DEFAULT_LIMITS, refusals: Refusals | None = None,
                 on_rejected: Callable[[str], None] | None = None) -> None:
        self.binary: ElfFile | None = None
        self.debug: ElfFile | None = None
        self.debug_source = ""
        self.build_id = build_id
        self.identity = mapped.identity if mapped is not None else None
        self.has_dwarf = self.has_functions = False
        self._bin_dwarf: DwarfSymbols | None = None
        self._dbg_dwarf: DwarfSymbols | None = None
        self._tables: list[tuple[str, SymbolTable]] = []
        self._refusals = refusals
        self._on_rejected = on_rejected
        self._limits = limits
        self.budget = Budget(limits, mapped.path if mapped is not None else build_id)
        self.rejected = ""
        try:
            self.budget.run(self._load, mapped, debug_dirs, debuginfod)
        except Rejected as exc:
            self._reject(exc.reason, exc.detail)
        except Exception as exc:     # malformed input pyelftools chokes on: what loaded stays
            log.debug("reading %s stopped: %s", self.budget.name, exc)

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected = reason
        self._note("object", Refused(reason, f"{detail or self.build_id}: skipped"))
        if self._on_rejected is not None:
            self._on_rejected(reason)
        self.close()
        self.binary = self.debug = None
        self._bin_dwarf = self._dbg_dwarf = None
        self._tables = []
        self.has_dwarf = self.has_functions = False

    def _load(self, mapped: MappedFile | None, debug_dirs: Sequence[str],
              debuginfod: DebuginfodClient | None) -> None:
        build_id = self.build_id
        if mapped is not None:
            try:
                self.binary = ElfFile(mapped.fd, name=mapped.path, limits=self._limits)
            except Refused as exc:
                self._note("mapped_file", exc)
            except Exception as exc:
                log.debug("cannot read %s: %s", mapped.path, exc)
        if self.binary is not None and build_id and self.binary.build_id \
                and self.binary.build_id != build_id:
            log.debug("%s has build-id %s, wanted %s: using debug files only",
                      self.binary.path, self.binary.build_id, build_id)
            self.binary.close()
            self.binary = None
        self.build_id = build_id or (self.binary.build_id if self.binary else "")
        root = mapped.root if mapped is not None else ""
        bin_dwarf = self.binary is not None and self.binary.has_dwarf
        if not bin_dwarf:
            self._find_debug(debug_dirs, root, debuginfod)
        self._bin_dwarf = self._dwarf(self.binary) if bin_dwarf else None
        self._dbg_dwarf = self._dwarf(self.debug) if self.debug and self.debug.has_dwarf else None
        self.has_dwarf = self._bin_dwarf is not None or self._dbg_dwarf is not None
        self._tables = [(src, t) for src, t in (
            ("symtab", self.binary.symbols(".symtab") if self.binary else None),
            (self.debug_source, self.debug.symbols(".symtab") if self.debug else None),
            ("dynsym", self.binary.symbols(".dynsym") if self.binary else None),
        ) if t is not None]
        self.has_functions = self.has_dwarf or bool(self._tables)
        for elf in (self.binary, self.debug):
            for what in elf.skipped if elf is not None else ():
                self._note("elf_section", Refused("section_too_large", what))

    def _dwarf(self, elf: ElfFile | None) -> DwarfSymbols | None:
        if elf is None:
            return None
        try:
            return DwarfSymbols(elf)
        except Refused as exc:       # DWARF over its caps: the symbol tables still answer
            self._note("dwarf", exc)
        except Exception as exc:
            log.debug("unreadable DWARF in %s: %s", elf.path, exc)
        return None

    def _note(self, source: str, exc: Refused) -> None:
        if self._refusals is not None:
            self._refusals.note_exc(source, exc)
        else:
            log.debug("refused %s: %s", source, exc)

    @property
    def usable(self) -> bool:
        return not self.rejected and (self.binary is not None or self.debug is not None)

    def _find_debug(self, debug_dirs: Sequence[str], root: str,
                    debuginfod: DebuginfodClient | None) -> None:
        found: DebugFile | None = None
        if self.binary is not None:
            found = find_debug_file(self.binary, debug_dirs, root=root,
                                    refusals=self._refusals)
        elif self.build_id:   # the file is gone: the host's debug directories only
            found = find_by_build_id(self.build_id, debug_dirs, refusals=self._refusals)
        source = "debuginfo_file"
        path = ""
        if found is None and debuginfod is not None and self.build_id:
            path = debuginfod.debuginfo(self.build_id) or ""
            source = "debuginfod"
        if found is None and not path:
            return
        try:
            if found is not None:
                self.debug = ElfFile(found.fd, name=found.path, limits=self._limits)
            else:         # the agent's own debuginfod cache: a host file
                self.debug = ElfFile(path, limits=self._limits)
            self.debug_source = source
        except Refused as exc:
            self._note("debug_file", exc)
        except Exception as exc:
            log.debug("cannot read debug file %s: %s", found.path if found else path, exc)
        finally:
            if found is not None:
                os.close(found.fd)

    def to_vaddr(self, file_offset: int) -> int | None:
        elf = self.binary or self.debug
        return elf.offset_to_vaddr(file_offset) if elf is not None else None

    def lookup(self, vaddr: int) -> RawAnswer | None:
        if self.rejected:
            return None
        for source, dwarf in (("dwarf", self._bin_dwarf), (self.debug_source, self._dbg_dwarf)):
            if dwarf is None:
                continue
            lines: list[DwarfLine] | None
            try:
                cached = dwarf.lookup_indexed(vaddr)
                if cached is UNINDEXED:   # this unit is parsed now: a step of the budget
                    lines = self.budget.run(dwarf.lookup, vaddr)
                else:
                    lines = cached    # type: ignore[assignment]
            except Rejected as exc:
                self._reject(exc.reason, exc.detail)
                return None
            except Exception as exc:   # malformed DWARF must not lose the frame
                log.debug("DWARF look-up failed at 0x%x: %s", vaddr, exc)
                lines = None
            if lines:
                return source, self._public_name(vaddr, lines)
        for source, table in self._tables:
            hit = table.lookup(vaddr)
            if hit is not None:
                return source, [(hit[0], hit[0], "", 0, 0)]
        return None

    def _public_name(self, vaddr: int, lines: list[DwarfLine]) -> list[DwarfLine]:
        """DWARF names C functions by their internal name (``__nanosleep``,
        ``__GI___wait4``); when the symbol table has the same function under a
        public name (``nanosleep``) show that one, as perf and eu-stack do."""
        system, plain, file, line, decl = lines[-1]
        if system.startswith(("_Z", "_R")):
            return lines
        for _source, table in self._tables:
            hit = table.lookup(vaddr)
            if hit is None:
                continue
            public = hit[0]
            if public != plain and public.lstrip("_") == plain.lstrip("_"):
                return [*lines[:-1], (system, public, file, line, decl)]
            return lines
        return lines

    def close(self) -> None:
        for elf in (self.binary, self.debug):
            if elf is not None:
                elf.close()

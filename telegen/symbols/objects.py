"""Everything known about one object file: the binary, its separate debug file
(local or from debuginfod) and their DWARF, queried in priority order."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from telegen.symbols.debugfile import build_id_path, find_debug_file
from telegen.symbols.debuginfod import DebuginfodClient
from telegen.symbols.dwarf import DwarfLine, DwarfSymbols
from telegen.symbols.elf import ElfFile

log = logging.getLogger(__name__)

# A raw answer: (source, [(raw name, plain name, file, line, decl line), ...] innermost first)
RawAnswer = tuple[str, list[DwarfLine]]


class ObjectSymbols:
    """Symbols of one object. Look-up order for an address:

    DWARF of the binary → DWARF of the debug file → binary ``.symtab`` →
    debug file ``.symtab`` → binary ``.dynsym``. Answers from the debug file are
    labelled ``debuginfo_file`` (found on disk) or ``debuginfod`` (downloaded).
    """

    def __init__(self, path: str | None, build_id: str, *, debug_dirs: Sequence[str],
                 root: str = "", debuginfod: DebuginfodClient | None = None) -> None:
        self.binary: ElfFile | None = None
        if path:
            try:
                self.binary = ElfFile(path)
            except Exception as exc:
                log.debug("cannot read %s: %s", path, exc)
        if self.binary is not None and build_id and self.binary.build_id \
                and self.binary.build_id != build_id:
            log.debug("%s has build-id %s, wanted %s: using debug files only",
                      path, self.binary.build_id, build_id)
            self.binary.close()
            self.binary = None
        self.build_id = build_id or (self.binary.build_id if self.binary else "")
        self.debug: ElfFile | None = None
        self.debug_source = ""
        bin_dwarf = self.binary is not None and self.binary.has_dwarf
        if not bin_dwarf:
            self._find_debug(debug_dirs, root, debuginfod)
        self._bin_dwarf = DwarfSymbols(self.binary) if bin_dwarf and self.binary else None
        self._dbg_dwarf = DwarfSymbols(self.debug) if self.debug and self.debug.has_dwarf else None
        self.has_dwarf = self._bin_dwarf is not None or self._dbg_dwarf is not None
        self._tables = [(src, t) for src, t in (
            ("symtab", self.binary.symbols(".symtab") if self.binary else None),
            (self.debug_source, self.debug.symbols(".symtab") if self.debug else None),
            ("dynsym", self.binary.symbols(".dynsym") if self.binary else None),
        ) if t is not None]
        self.has_functions = self.has_dwarf or bool(self._tables)

    @property
    def usable(self) -> bool:
        return self.binary is not None or self.debug is not None

    def _find_debug(self, debug_dirs: Sequence[str], root: str,
                    debuginfod: DebuginfodClient | None) -> None:
        path: str | None = None
        if self.binary is not None:
            path = find_debug_file(self.binary, debug_dirs, root=root)
        elif self.build_id:
            path = next((p for d in debug_dirs
                         if os.path.isfile(p := build_id_path(d, self.build_id))), None)
        source = "debuginfo_file"
        if path is None and debuginfod is not None and self.build_id:
            path = debuginfod.debuginfo(self.build_id)
            source = "debuginfod"
        if path is None:
            return
        try:
            self.debug = ElfFile(path)
            self.debug_source = source
        except Exception as exc:
            log.debug("cannot read debug file %s: %s", path, exc)

    def to_vaddr(self, file_offset: int) -> int | None:
        elf = self.binary or self.debug
        return elf.offset_to_vaddr(file_offset) if elf is not None else None

    def lookup(self, vaddr: int) -> RawAnswer | None:
        for source, dwarf in (("dwarf", self._bin_dwarf), (self.debug_source, self._dbg_dwarf)):
            if dwarf is None:
                continue
            try:
                lines = dwarf.lookup(vaddr)
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

"""Minimal function lookup for tests, until the symbolizer is in the pipeline:
function address ranges from an ELF ``.symtab`` (pyelftools), placed in a
process through the frame's mapping (start, file offset) and the ELF's
program headers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from telegen.pdata import Frame, Mapping


@dataclass(frozen=True)
class Function:
    name: str
    start: int     # ELF virtual address
    size: int


class ElfFunctions:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab = elf.get_section_by_name(".symtab")
            symbols = symtab.iter_symbols() if isinstance(symtab, SymbolTableSection) else ()
            self.functions = sorted(
                (Function(s.name, s["st_value"], s["st_size"])
                 for s in symbols
                 if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]),
                key=lambda fn: fn.start)
            # (file offset, vaddr, filesz) of each PT_LOAD
            self._loads = [(seg["p_offset"], seg["p_vaddr"], seg["p_filesz"])
                           for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]

    def vaddr(self, address: int, mapping: Mapping) -> int | None:
        """The ELF virtual address of a process address inside ``mapping``."""
        file_off = address - mapping.start + mapping.offset
        for off, vaddr, size in self._loads:
            if off <= file_off < off + size:
                return file_off - off + vaddr
        return None

    def function_at(self, vaddr: int) -> str | None:
        for fn in self.functions:
            if fn.start <= vaddr < fn.start + max(fn.size, 1):
                return fn.name
        return None

    def frame_function(self, frame: Frame) -> str | None:
        m = frame.mapping
        if m is None or Path(m.file).name != Path(self.path).name:
            return None
        v = self.vaddr(frame.address, m)
        return None if v is None else self.function_at(v)

    def stack_functions(self, stack: tuple[Frame, ...]) -> list[str]:
        """Names of this binary's functions in a stack, leaf first (others skipped)."""
        return [n for n in (self.frame_function(f) for f in stack) if n]

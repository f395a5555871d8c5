"""Symbol resolution: ELF symbol tables, DWARF, separate debug files,
debuginfod, /proc/kallsyms, perf maps and demangling. Pure library code —
no pipeline knowledge; :class:`Symbolizer` is the entry point."""

from __future__ import annotations

from telegen.symbols.symbolizer import Symbolizer, SymbolizerOptions, is_anonymous
from telegen.symbols.types import UNKNOWN, Resolution, SymLine

__all__ = ["Symbolizer", "SymbolizerOptions", "Resolution", "SymLine", "UNKNOWN", "is_anonymous"]

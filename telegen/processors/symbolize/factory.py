from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.processors.symbolize.config import SymbolizeConfig

FACTORY = Factory(
    type="symbolize",
    kind=Kind.PROCESSOR,
    config_type=SymbolizeConfig,
    create=lazy("telegen.processors.symbolize.symbolize:SymbolizeProcessor"),
    schema="processors/symbolize.json",
    description="name native, kernel and JIT frames: DWARF, ELF symbols, debug files, "
                "debuginfod, /proc/kallsyms, perf maps; C++/Rust demangling",
)

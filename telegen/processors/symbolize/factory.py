from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.processors.symbolize.config import SymbolizeConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.processors.symbolize.symbolize import SymbolizeProcessor

    return SymbolizeProcessor(settings, config, next_consumer)


FACTORY = Factory(
    type="symbolize",
    kind=Kind.PROCESSOR,
    config_type=SymbolizeConfig,
    create=_create,
    schema="processors/symbolize.json",
    description="name native, kernel and JIT frames: DWARF, ELF symbols, debug files, "
                "debuginfod, /proc/kallsyms, perf maps; C++/Rust demangling",
)

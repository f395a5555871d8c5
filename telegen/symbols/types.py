"""Plain result types of the symbols library (no pipeline knowledge)."""

from __future__ import annotations

from typing import NamedTuple, Protocol


class SymLine(NamedTuple):
    """One function at an address; several per address when code was inlined."""

    function: str            # display name (demangled when asked)
    file: str = ""
    line: int = 0
    system_name: str = ""    # raw / mangled name
    start_line: int = 0


class Resolution(NamedTuple):
    """What an address resolved to. ``lines`` is innermost first (pprof order);
    empty when nothing knew the address (``source == "unknown"``)."""

    lines: tuple[SymLine, ...]
    # dwarf|symtab|dynsym|debuginfo_file|debuginfod|kallsyms|perfmap|unknown
    source: str
    has_functions: bool = False
    has_filenames: bool = False
    has_line_numbers: bool = False
    has_inline_frames: bool = False
    # the object's DWARF index (or debug file download) was not ready: the
    # best answer so far (symbol tables); not to be remembered as final
    pending: bool = False


UNKNOWN = Resolution((), "unknown")


class CounterLike(Protocol):
    def add(self, n: int = 1) -> None: ...


class NullCounter:
    __slots__ = ()

    def add(self, n: int = 1) -> None:
        pass

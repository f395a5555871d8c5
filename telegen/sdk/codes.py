"""Frames as the sampler records them, and their names and lines at upload.

Hashing a code object is expensive (CPython hashes its name, constants,
names, ... on every call, nested code objects included) and so is
``frame.f_lineno`` (a scan of the line table), while the sampler records
thousands of frames a second. So a frame is counted as
``(id(code), frame.f_lasti)`` -- two ints, cheap to build and to hash -- and
turned into ``module.function`` / file / line only when a profile is built.
The names table (:data:`Names`) keeps every code object it has an id for
alive, so an id cannot be reused for another code object while it is in the
table.
Compatible with Python 3.8+.
"""

from __future__ import annotations

import bisect
import dis
import sys
from types import CodeType
from typing import TYPE_CHECKING

from telegen.sdk.names import function_name

if TYPE_CHECKING:
    from telegen.sdk.spans import Link

    FrameKey = tuple[int, int]                  # (id(code), f_lasti)
    # code id -> (module.function, file, the code object)
    Names = dict[int, tuple[str, str, CodeType]]
    # one sample: (tid, thread name, task name, stack leaf first, span link)
    SampleKey = tuple[int, str, str, tuple[FrameKey, ...], Link | None]

_MAX_CODES = 50000


def register(names: Names, code: CodeType, modules: Modules) -> None:
    """Name ``code`` (its module found by its file) in ``names``."""
    qual = getattr(code, "co_qualname", None) or code.co_name
    names[id(code)] = (function_name(modules.name(code.co_filename), qual, code.co_filename),
                       code.co_filename, code)


class Modules:
    """Module names by file, from ``sys.modules``: the ``__name__`` a frame's
    globals would give, without a frame (the ticks keep only code objects).
    Rebuilt on a miss when modules were imported since; a file no module
    claims (a script, ``exec``'d code) is named by its path
    (:func:`telegen.sdk.names.function_name`)."""

    def __init__(self) -> None:
        self._by_file: dict[str, str] = {}
        self._seen = -1

    def name(self, path: str) -> str:
        hit = self._by_file.get(path)
        if hit is None and len(sys.modules) != self._seen:
            self._rebuild()
            hit = self._by_file.get(path)
        return hit or ""

    def _rebuild(self) -> None:
        self._seen = len(sys.modules)
        by_file = self._by_file
        for name, mod in list(sys.modules.items()):
            path = getattr(mod, "__file__", None)
            if isinstance(path, str) and (name != "__main__" or path not in by_file):
                by_file[path] = name


def full(names: Names) -> bool:
    """Time for a fresh table (checked between upload intervals only, so a
    buffer's ids always resolve in the table it was recorded with)."""
    return len(names) > _MAX_CODES


class Lines:
    """``f_lasti`` -> line number, per code object (what ``f_lineno`` gives)."""

    def __init__(self) -> None:
        self._tables: dict[int, tuple[list[int], list[int]]] = {}

    def line(self, code: CodeType, lasti: int) -> int:
        if lasti < 0:                   # not started yet
            return code.co_firstlineno
        table = self._tables.get(id(code))
        if table is None:
            table = self._tables[id(code)] = _line_table(code)
        starts, lines = table
        i = bisect.bisect_right(starts, lasti) - 1
        return lines[i] if i >= 0 else code.co_firstlineno


def _line_table(code: CodeType) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    lines: list[int] = []
    co_lines = getattr(code, "co_lines", None)          # 3.10+: exact ranges
    if co_lines is not None:
        for start, _end, line in co_lines():            # no line (None): 0, like f_lineno
            starts.append(start)
            lines.append(line or 0)
    else:                                               # 3.8, 3.9: line starts
        for start, line in dis.findlinestarts(code):
            starts.append(start)
            lines.append(line)
    return starts, lines

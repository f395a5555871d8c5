"""A Go binary's pclntab as one more source of :class:`ObjectSymbols`
(``telegen.symbols.objects``): used for Go binaries without DWARF
(``-ldflags="-s -w"``, ``-w``, stripped copies), whose ``.symtab`` — when
there is one — names functions but no file, line or inlined call."""

from __future__ import annotations

import logging
from collections.abc import Callable

from telegen.procinfo.elfheaders import ElfHeaders
from telegen.symbols.gopclntab import GoFunctions, is_go
from telegen.untrusted import Refused

log = logging.getLogger(__name__)

GoAnswer = tuple[str, list[tuple[str, str, str, int, int]]]


def open_for_object(fd: int, headers: ElfHeaders,
                    note: Callable[[str, Refused], None]) -> GoFunctions | None:
    """The Go functions of an object's binary (open on ``fd``) when it is Go;
    a malformed pclntab is noted (``gopclntab``) and None."""
    if not is_go(headers, fd):
        return None
    try:
        return GoFunctions.open(fd)
    except Refused as exc:
        note("gopclntab", exc)
    except OSError as exc:
        log.debug("cannot map %d for its pclntab: %s", fd, exc)
    return None


def answer(go: GoFunctions, vaddr: int, note: Callable[[str, Refused], None]) -> GoAnswer | None:
    """``("gopclntab", [(name, name, file, line, 0), ...])`` innermost first,
    the shape of ObjectSymbols' answers; None outside Go code or refused."""
    try:
        frames = go.lookup(vaddr)
    except Refused as exc:
        note("gopclntab", exc)
        return None
    if not frames:
        return None
    return "gopclntab", [(f.function, f.function, f.file, max(f.line, 0), 0) for f in frames]

"""Attacker text (symbol names, paths, peers' strings) made safe to show."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` safe to write to a terminal or a log line: every character
    that is not printable — C0 controls (ESC, CR, LF, BS…), DEL, C1 controls
    (CSI is U+009B), Unicode format characters (bidi overrides) and
    separators — is shown escaped as Python does (ESC as backslash-x1b), so a
    name taken from a profiled binary can neither drive the terminal nor fake
    a line of a table or a log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def shortened(text: str, limit: int = 300) -> str:
    """:func:`printable`, cut to ``limit`` characters of the original."""
    return printable(text[:limit]) + ("…" if len(text) > limit else "")


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"

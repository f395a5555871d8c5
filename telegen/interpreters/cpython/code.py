"""Code objects read from a CPython process's memory: qualified name, file
and line of a frame, from the code object's address and the frame's
instruction value as the BPF walker recorded it.

``instr`` is the raw value read from the frame:

- 3.8–3.10: ``PyFrameObject.f_lasti`` (a C int; bytes in 3.8/3.9, code
  units in 3.10; -1 before the first instruction);
- 3.11/3.12: ``_PyInterpreterFrame.prev_instr`` and 3.13+: ``instr_ptr``
  (absolute pointers into the code object's ``co_code_adaptive``).

Line numbers follow the version's line table: ``co_lnotab`` (3.8/3.9),
``co_linetable`` byte pairs (3.10, PEP 626), the location table (3.11+,
PEP 657). Names before 3.11 are ``co_name`` (no ``co_qualname`` then).

A code object's address is reused once it is freed, so every look-up reads
the object's head again (one ``process_vm_readv``) and the cache entry must
match it (type, name and file pointers, first line, line table pointer); the
lines of a code object are cached in its entry, so a new object at the same
address never inherits them. Callers that name many frames at once (the
receiver, once per window) check each code object once with :meth:`code` and
name its frames with :meth:`line_in`: the entry is the same object as long
as the code object is the same.
Everything read is the process's: sizes capped, garbage refused and
counted, never a crash or a loop that is not bounded by the bytes read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from cachetools import LRUCache

from telegen.interpreters.cpython.detect import SOURCE, CPythonProcess
from telegen.procinfo.memory import read_memory
from telegen.untrusted import Refusals, Refused
from telegen.untrusted.text import printable

MAX_NAME = 1024              # bytes of a name or file name
MAX_LINETABLE = 64 << 10     # bytes of a line table
HEAD = 256                   # bytes of a code object read per look-up
CODE_BYTES = 2 << 20         # bytes of code objects (names, files, line tables) cached per process
CODE_ENTRY = 2048            # bytes counted per code object besides strings and table (lines)
LINES_PER_CODE = 16          # instruction -> line results kept per code object (in CODE_ENTRY)
MAX_LINE = 1 << 31           # a line beyond this is garbage


class PyLine(NamedTuple):
    function: str      # co_qualname (3.11+) or co_name
    file: str          # co_filename
    line: int          # 0: unknown
    start_line: int    # co_firstlineno


class CodeEntry(NamedTuple):
    """One code object as read (the same object while the code object is)."""

    head: tuple[int, int, int, int, int]   # what must still match
    name: str
    file: str
    first_line: int
    table: bytes
    lines: dict[int, int]                  # instr -> line, at most LINES_PER_CODE


def _entry_size(code: CodeEntry) -> int:
    return CODE_ENTRY + len(code.table) + len(code.name) + len(code.file)


class CodeReader:
    """Names and lines of one CPython process's frames; a bounded cache."""

    def __init__(self, process: CPythonProcess, *, refusals: Refusals | None = None,
                 size: int = CODE_BYTES) -> None:
        self.process = process
        self._off = process.offsets
        self._refusals = refusals
        self._codes: LRUCache[int, CodeEntry] = LRUCache(size, getsizeof=_entry_size)

    def line(self, code_addr: int, instr: int) -> PyLine | None:
        """The frame's function, file and line; None when ``code_addr`` is not
        (or no longer) a code object of this process (counted)."""
        code = self.code(code_addr)
        return None if code is None else self.line_in(code, code_addr, instr)

    def code(self, code_addr: int) -> CodeEntry | None:
        """The code object at ``code_addr`` as it is now (one read of its head);
        None when it is not (or no longer) a code object (counted)."""
        try:
            return self._code(code_addr)
        except Refused as exc:
            if self._refusals is not None:
                self._refusals.note_exc(SOURCE, exc)
            return None

    def line_in(self, code: CodeEntry, code_addr: int, instr: int) -> PyLine:
        """The frame at ``instr`` of ``code`` (read by :meth:`code` at ``code_addr``)."""
        line = code.lines.get(instr)
        if line is None:
            line = self._line_of(code, code_addr, instr)
            if len(code.lines) >= LINES_PER_CODE:
                code.lines.clear()
            code.lines[instr] = line
        return PyLine(code.name, code.file, line, code.first_line)

    # -- the code object --------------------------------------------------------------
    def _code(self, addr: int) -> CodeEntry | None:
        raw = read_memory(self.process.pid, addr, HEAD)
        if raw is None:
            return None
        o = self._off
        ob_type = struct.unpack_from("<Q", raw, 8)[0]
        if self.process.code_type and ob_type != self.process.code_type:
            raise Refused("not_code", f"object at {addr:#x} is not a code object")
        name_at = o["code_qualname"] if o["code_qualname"] is not None else o["code_name"]
        head = (ob_type, _ptr(raw, name_at), _ptr(raw, o["code_filename"]),
                _i32(raw, o["code_firstlineno"]), _ptr(raw, o["code_linetable"]))
        cached = self._codes.get(addr)
        if cached is not None and cached.head == head:
            return cached
        _, name_ptr, file_ptr, first_line, table_ptr = head
        code = CodeEntry(head, self._unicode(name_ptr), self._unicode(file_ptr), first_line,
                         self._bytes(table_ptr), {})
        self._codes[addr] = code
        return code

    def _unicode(self, addr: int) -> str:
        o = self._off
        compact_size, ascii_size = o["unicode_compact_size"] or 0, o["unicode_ascii_size"] or 0
        raw = read_memory(self.process.pid, addr, compact_size)
        if raw is None:
            raise Refused("unreadable", f"str at {addr:#x}")
        length = struct.unpack_from("<q", raw, 16)[0]
        state = struct.unpack_from("<I", raw, o["unicode_state"] or 0)[0]
        kind, compact, is_ascii = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
        if not compact or kind not in (1, 2, 4) or not 0 <= length * kind <= MAX_NAME:
            raise Refused("bad_str", f"str at {addr:#x}: kind {kind}, length {length}")
        start = addr + (ascii_size if is_ascii else compact_size)
        data = read_memory(self.process.pid, start, length * kind) if length else b""
        if data is None:
            raise Refused("unreadable", f"str data at {start:#x}")
        codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        return printable(data.decode(codec, "replace"))

    def _bytes(self, addr: int) -> bytes:
        raw = read_memory(self.process.pid, addr, 32)
        if raw is None:
            raise Refused("unreadable", f"bytes at {addr:#x}")
        size = struct.unpack_from("<q", raw, 16)[0]
        if not 0 <= size <= MAX_LINETABLE:
            raise Refused("too_large", f"line table of {size} bytes")
        data = read_memory(self.process.pid, addr + (self._off["bytes_sval"] or 32), size) \
            if size else b""
        if data is None:
            raise Refused("unreadable", f"line table at {addr:#x}")
        return data

    # -- lines ------------------------------------------------------------------------
    def _line_of(self, code: CodeEntry, code_addr: int, instr: int) -> int:
        version = self.process.version
        if version >= 311:
            base = code_addr + (self._off["code_adaptive"] or 0)
            units = (instr - base) // 2
            if not 0 <= units < 1 << 24:
                return 0
            return location_line(code.table, code.first_line, units)
        lasti = struct.unpack("<i", struct.pack("<I", instr & 0xFFFFFFFF))[0]
        if lasti < 0:
            return code.first_line
        if version == 310:
            return linetable_line(code.table, code.first_line, lasti * 2)
        return lnotab_line(code.table, code.first_line, lasti)


def lnotab_line(table: bytes, first_line: int, offset: int) -> int:
    """3.8/3.9 ``co_lnotab``: (bytecode delta, signed line delta) pairs."""
    line, addr = first_line, 0
    for i in range(0, len(table) - 1, 2):
        addr += table[i]
        if addr > offset:
            break
        delta = table[i + 1]
        line += delta - 256 if delta >= 128 else delta
    return line


def linetable_line(table: bytes, first_line: int, offset: int) -> int:
    """3.10 ``co_linetable``: (bytes delta, signed line delta; -128: none) pairs."""
    line, start = first_line, 0
    for i in range(0, len(table) - 1, 2):
        end = start + table[i]
        delta = table[i + 1]
        delta = delta - 256 if delta >= 128 else delta
        if delta != -128:
            line += delta
        if start <= offset < end:
            return line if delta != -128 else 0
        start = end
    return 0


def location_line(table: bytes, first_line: int, unit: int) -> int:
    """3.11+ location table (``Objects/locations.md``): the line of code unit ``unit``."""
    line, at = first_line, 0
    for code, length, delta in _entries(table):
        line += delta
        if at <= unit < at + length:
            return 0 if code == 15 or not 0 < line < MAX_LINE else line
        at += length
    return 0


def _entries(table: bytes) -> Iterator[tuple[int, int, int]]:
    """(code, length in code units, line delta) of each location entry."""
    i, n = 0, len(table)
    while i < n:
        first = table[i]
        i += 1
        if not first & 0x80:
            return                     # not an entry start: corrupt
        code, length = (first >> 3) & 15, (first & 7) + 1
        delta = 0
        if code == 15:                 # no location
            pass
        elif code == 14:               # long form: line delta, end line, column, end column
            delta, i = _svarint(table, i)
            for _ in range(3):
                _, i = _varint(table, i)
        elif code == 13:               # no column: line delta
            delta, i = _svarint(table, i)
        elif code >= 10:               # one-line form: delta = code - 10, two column bytes
            delta, i = code - 10, i + 2
        else:                          # short form: same line, one column byte
            i += 1
        yield code, length, delta


def _varint(table: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(table) and shift < 32:
        b = table[i]
        i += 1
        value |= (b & 63) << shift
        shift += 6
        if not b & 64:
            break
    return value, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    value, i = _varint(table, i)
    return (-(value >> 1) if value & 1 else value >> 1), i


def _ptr(raw: bytes, at: int | None) -> int:
    return struct.unpack_from("<Q", raw, at)[0] if at is not None and at + 8 <= len(raw) else 0


def _i32(raw: bytes, at: int | None) -> int:
    return struct.unpack_from("<i", raw, at)[0] if at is not None and at + 4 <= len(raw) else 0

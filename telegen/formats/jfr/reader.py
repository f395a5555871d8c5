"""Low-level decoding of one chunk's bytes: compressed (LEB128-style) or
fixed-width big-endian integers, floats and JFR's string encodings.

JFR's compressed integers are little-endian base-128 groups of 7 bits, high
bit = "more follows", except that the ninth byte contributes all 8 bits, so a
64-bit value never needs more than 9 bytes. Values are two's complement: a
``long`` of -1 is nine 0xff-ish bytes, which we fold back to a signed value.
Which form a chunk uses is a flag in its header.

Strings start with an encoding byte: 0 null, 1 empty, 2 constant-pool
reference (a long key into the ``java.lang.String`` pool), 3 UTF-8, 4 char
array (each char an integer), 5 Latin-1; 3-5 carry a length first.
"""

from __future__ import annotations

import struct

from telegen.formats.jfr.errors import JfrError

_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_MAX_STRING = 16 << 20    # longest string we accept (bytes or chars)
_MAX_COUNT = 1 << 26      # longest array / pool / table we accept


class PoolString:
    """A string stored in the chunk's ``java.lang.String`` constant pool."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"PoolString({self.key})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolString) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("PoolString", self.key))


def _signed64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


class Cursor:
    """A position in one chunk's bytes. ``base`` is the chunk's file offset,
    used only to report absolute positions in errors."""

    __slots__ = ("data", "pos", "end", "base", "compressed")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None, *,
                 base: int = 0, compressed: bool = True) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))
        self.base = base
        self.compressed = compressed

    def error(self, message: str) -> JfrError:
        return JfrError(message, self.base + self.pos)

    def _need(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise self.error(f"truncated: need {n} bytes, {self.end - pos} left")
        self.pos = pos + n
        return pos

    # -- integers ------------------------------------------------------------------
    def varint(self) -> int:
        """A compressed long (unsigned bit pattern folded to signed)."""
        data, pos, end = self.data, self.pos, self.end
        if pos < end:
            b = data[pos]
            if b < 0x80:
                self.pos = pos + 1
                return b
        result = 0
        shift = 0
        for i in range(9):
            if pos >= end:
                self.pos = pos
                raise self.error("truncated compressed integer")
            b = data[pos]
            pos += 1
            if i == 8:
                result |= b << 56
                break
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        self.pos = pos
        return _signed64(result) if result >> 63 else result

    def i64(self) -> int:
        if self.compressed:
            return self.varint()
        return int(_I64.unpack_from(self.data, self._need(8))[0])

    def i32(self) -> int:
        if self.compressed:
            v = self.varint() & 0xFFFFFFFF
            return v - (1 << 32) if v & (1 << 31) else v
        return int(_I32.unpack_from(self.data, self._need(4))[0])

    def i16(self) -> int:
        if self.compressed:
            v = self.varint() & 0xFFFF
            return v - (1 << 16) if v & (1 << 15) else v
        return int(_I16.unpack_from(self.data, self._need(2))[0])

    def char(self) -> str:
        code = self.i16() & 0xFFFF
        return chr(code)

    def i8(self) -> int:
        b = self.data[self._need(1)]
        return b - 256 if b > 127 else b

    def u8(self) -> int:
        return self.data[self._need(1)]

    def boolean(self) -> bool:
        return self.data[self._need(1)] != 0

    def f32(self) -> float:
        return float(_F32.unpack_from(self.data, self._need(4))[0])

    def f64(self) -> float:
        return float(_F64.unpack_from(self.data, self._need(8))[0])

    def raw_i16(self) -> int:
        return int(_I16.unpack_from(self.data, self._need(2))[0])

    def raw_i32(self) -> int:
        return int(_I32.unpack_from(self.data, self._need(4))[0])

    def raw_i64(self) -> int:
        return int(_I64.unpack_from(self.data, self._need(8))[0])

    def count(self, what: str) -> int:
        """A length or element count: non-negative, and no larger than the
        bytes left (every element takes at least one byte)."""
        n = self.i32()
        if n < 0 or n > _MAX_COUNT or n > self.end - self.pos:
            raise self.error(f"implausible {what} count {n}")
        return n

    # -- strings -------------------------------------------------------------------
    def string(self) -> str | PoolString | None:
        enc = self.u8()
        if enc == 0:
            return None
        if enc == 1:
            return ""
        if enc == 2:
            return PoolString(self.i64())
        if enc in (3, 5):
            n = self.count("string bytes")
            if n > _MAX_STRING:
                raise self.error(f"string of {n} bytes is too long")
            start = self._need(n)
            raw = self.data[start:start + n]
            return raw.decode("utf-8", "replace") if enc == 3 else raw.decode("latin-1")
        if enc == 4:
            n = self.count("chars")
            if n > _MAX_STRING:
                raise self.error(f"string of {n} chars is too long")
            if self.compressed:        # all chars < 0x80: one byte each
                raw = self.data[self.pos:self.pos + n]
                if len(raw) == n and raw.isascii():
                    self.pos += n
                    return raw.decode("ascii")
            chars = [self.i16() & 0xFFFF for _ in range(n)]
            try:
                return "".join(map(chr, chars)).encode("utf-16", "surrogatepass").decode(
                    "utf-16", "replace")
            except UnicodeError:
                return "".join(chr(c) if c < 0xD800 or c > 0xDFFF else "\ufffd" for c in chars)
        raise self.error(f"unknown string encoding {enc}")

    def plain_string(self) -> str:
        """A string that may not be a pool reference (metadata string table)."""
        s = self.string()
        if isinstance(s, PoolString):
            raise self.error("constant-pool string where an inline string is required")
        return s or ""


class VarCursor(Cursor):
    """A cursor over a chunk with compressed integers: int, long, short and
    char are all varints (fast path for one-byte values inlined)."""

    __slots__ = ()

    def i64(self) -> int:
        pos = self.pos
        if pos < self.end:
            b = self.data[pos]
            if b < 0x80:
                self.pos = pos + 1
                return b
        return self.varint()

    def i32(self) -> int:
        pos = self.pos
        if pos < self.end:
            b = self.data[pos]
            if b < 0x80:
                self.pos = pos + 1
                return b
        v = self.varint() & 0xFFFFFFFF
        return v - (1 << 32) if v & (1 << 31) else v


def make_cursor(data: bytes, pos: int = 0, end: int | None = None, *, base: int = 0,
                compressed: bool = True) -> Cursor:
    cls = VarCursor if compressed else Cursor
    return cls(data, pos, end, base=base, compressed=compressed)

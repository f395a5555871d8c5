"""Build small synthetic JFR chunks for unit tests (the writer side of the
format, only as much as the tests need)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


def varint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    for _ in range(8):
        if v < 0x80:
            out.append(v)
            return bytes(out)
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v & 0xFF)
    return bytes(out)


@dataclass
class Enc:
    compressed: bool = True

    def i64(self, v: int) -> bytes:
        return varint(v) if self.compressed else struct.pack(">q", v)

    def i32(self, v: int) -> bytes:
        return varint(v) if self.compressed else struct.pack(">i", v)

    def i16(self, v: int) -> bytes:
        return varint(v) if self.compressed else struct.pack(">h", v)

    def string(self, s: str | None, how: str = "utf8") -> bytes:
        if s is None:
            return b"\0"
        if s == "" and how != "utf8":
            return b"\1"
        if how == "utf8":
            raw = s.encode()
            return b"\3" + self.i32(len(raw)) + raw
        if how == "latin1":
            raw = s.encode("latin-1")
            return b"\5" + self.i32(len(raw)) + raw
        if how == "chars":
            units = s.encode("utf-16-be")
            codes = [int.from_bytes(units[i:i + 2], "big") for i in range(0, len(units), 2)]
            return b"\4" + self.i32(len(codes)) + b"".join(self.i16(c) for c in codes)
        raise ValueError(how)

    def pool_string(self, key: int) -> bytes:
        return b"\2" + self.i64(key)


@dataclass
class Cls:
    id: int
    name: str
    fields: list[tuple[str, int, bool, bool]] = field(default_factory=list)  # name, type, cp, arr
    super_type: str = ""


def metadata_body(enc: Enc, classes: list[Cls]) -> bytes:
    strings: list[str] = []

    def s(x: str) -> int:
        if x not in strings:
            strings.append(x)
        return strings.index(x)

    def element(name: str, attrs: dict[str, str], children: list[bytes]) -> bytes:
        out = enc.i32(s(name)) + enc.i32(len(attrs))
        for k, v in attrs.items():
            out += enc.i32(s(k)) + enc.i32(s(v))
        return out + enc.i32(len(children)) + b"".join(children)

    class_elements = []
    for c in classes:
        attrs = {"id": str(c.id), "name": c.name}
        if c.super_type:
            attrs["superType"] = c.super_type
        fields = []
        for fname, ftype, cp, arr in c.fields:
            fa = {"name": fname, "class": str(ftype)}
            if cp:
                fa["constantPool"] = "true"
            if arr:
                fa["dimension"] = "1"
            fields.append(element("field", fa, []))
        class_elements.append(element("class", attrs, fields))
    root = element("root", {}, [element("metadata", {}, class_elements),
                                element("region", {"locale": "en_US"}, [])])
    head = enc.i64(0) + enc.i64(0) + enc.i64(1)
    table = enc.i32(len(strings)) + b"".join(enc.string(x, "chars") for x in strings)
    return head + table + root


def event(enc: Enc, type_id: int, body: bytes) -> bytes:
    """size + type + body; the size counts itself (fixed 4/5 bytes)."""
    rest = enc.i64(type_id) + body
    if enc.compressed:     # a padded 5-byte varint, as the JDK writes sizes
        n = len(rest) + 5
        size = bytes([(n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80,
                      ((n >> 21) & 0x7F) | 0x80, (n >> 28) & 0x7F])
        return size + rest
    return struct.pack(">i", len(rest) + 4) + rest


def checkpoint(enc: Enc, delta: int, pools: list[tuple[int, list[tuple[int, bytes]]]]) -> bytes:
    body = enc.i64(0) + enc.i64(0) + enc.i64(delta) + b"\0" + enc.i32(len(pools))
    for class_id, entries in pools:
        body += enc.i64(class_id) + enc.i32(len(entries))
        for key, value in entries:
            body += enc.i64(key) + value
    return event(enc, 1, body)


def chunk(enc: Enc, classes: list[Cls], events: list[bytes],
          pools: list[list[tuple[int, list[tuple[int, bytes]]]]], *,
          start_ns: int = 1_700_000_000_000_000_000, tps: int = 1_000_000_000) -> bytes:
    """A chunk: header, events, metadata, then checkpoints chained by delta."""
    body = bytearray(b"".join(events))
    md_offset = 68 + len(body)
    body += event(enc, 0, metadata_body(enc, classes))
    prev = 0
    for group in pools:
        pos = 68 + len(body)
        body += checkpoint(enc, (prev - pos) if prev else 0, group)
        prev = pos
    size = 68 + len(body)
    header = struct.pack(">4sHHqqqqqqqBBBB", b"FLR\0", 2, 1, size, prev, md_offset, start_ns,
                         1_000_000, 0, tps, 0, 0, 0, 1 if enc.compressed else 0)
    return header + bytes(body)


# A tiny type system: primitives + an event with a string, a pooled thread and an array.
LONG, INT, STRING, BOOL, DOUBLE, THREAD, SAMPLE, UNKNOWN = 1, 2, 3, 4, 5, 10, 20, 21


def demo_classes() -> list[Cls]:
    return [
        Cls(LONG, "long"), Cls(INT, "int"), Cls(STRING, "java.lang.String"),
        Cls(BOOL, "boolean"), Cls(DOUBLE, "double"),
        Cls(THREAD, "java.lang.Thread", [("javaName", STRING, False, False),
                                         ("javaThreadId", LONG, False, False)]),
        Cls(SAMPLE, "test.Sample", [("startTime", LONG, False, False),
                                    ("thread", THREAD, True, False),
                                    ("text", STRING, False, False),
                                    ("values", INT, False, True),
                                    ("flag", BOOL, False, False),
                                    ("ratio", DOUBLE, False, False)],
            super_type="jdk.jfr.Event"),
        Cls(UNKNOWN, "test.Other", [("startTime", LONG, False, False),
                                    ("blob", STRING, False, False)],
            super_type="jdk.jfr.Event"),
    ]


def sample_event(enc: Enc, thread_key: int, text_bytes: bytes, values: list[int],
                 flag: bool = True, ratio: float = 0.5) -> bytes:
    body = (enc.i64(5) + enc.i64(thread_key) + text_bytes + enc.i32(len(values))
            + b"".join(enc.i32(v) for v in values) + (b"\1" if flag else b"\0")
            + struct.pack(">d", ratio))
    return event(enc, SAMPLE, body)

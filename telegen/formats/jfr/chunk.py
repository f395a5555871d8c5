"""Chunks: the header, the constant pools and the event stream of one chunk.

A recording file is a sequence of self-contained chunks. Header (68 bytes,
big-endian)::

    0  magic "FLR\\0"        4  major u16, minor u16
    8  chunk size i64       16  constant-pool offset i64   24  metadata offset i64
    32 start (epoch ns)     40  duration ns                48  start ticks
    56 ticks per second     64  state byte, 2 reserved, flags byte
                                (bit 0 compressed integers, bit 1 final)

Offsets are relative to the chunk start. After the header come events, each
``size, type id, fields...`` (size counts itself). Type 0 is the metadata
event, type 1 a checkpoint (constant pools). Checkpoints are chained: the
header points at the last one, and each holds the (negative) delta to the one
before it, 0 ending the chain::

    size, 1, start, duration, delta, checkpoint-type byte, pool count,
    (class id, entry count, (key, value) * count) * pool count
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from telegen.formats.jfr.errors import JfrError
from telegen.formats.jfr.metadata import ClassDesc, Metadata, read_metadata
from telegen.formats.jfr.reader import Cursor, PoolString, make_cursor
from telegen.formats.jfr.values import Decoders

MAGIC = b"FLR\0"
HEADER_SIZE = 68
METADATA_TYPE = 0
CHECKPOINT_TYPE = 1
_HEADER = struct.Struct(">4sHHqqqqqqqBBBB")
_MAX_CHECKPOINTS = 1 << 16
_MAX_RESOLVE_DEPTH = 16
_METADATA_CACHE_SIZE = 4
_METADATA_CACHE: dict[tuple[bool, bytes], tuple[Metadata, Decoders]] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    offset: int            # of the chunk in its file
    major: int
    minor: int
    size: int
    cp_offset: int
    metadata_offset: int
    start_ns: int
    duration_ns: int
    start_ticks: int
    ticks_per_second: int
    state: int
    flags: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & 1)

    @property
    def final(self) -> bool:
        return bool(self.flags & 2)


def parse_header(raw: bytes, offset: int = 0) -> ChunkHeader:
    if len(raw) < HEADER_SIZE:
        raise JfrError(f"truncated chunk header ({len(raw)} of {HEADER_SIZE} bytes)", offset)
    (magic, major, minor, size, cp, md, start_ns, dur_ns, start_ticks, tps, state,
     _r1, _r2, flags) = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise JfrError(f"not a JFR chunk (magic {magic!r})", offset)
    if major not in (1, 2):
        raise JfrError(f"unsupported JFR version {major}.{minor}", offset)
    if size == 0 and state != 0:
        raise JfrError("chunk is still being written (size 0)", offset)
    if size < HEADER_SIZE:
        raise JfrError(f"chunk size {size} is smaller than its header", offset)
    for name, off in (("constant-pool", cp), ("metadata", md)):
        if not HEADER_SIZE <= off < size:
            raise JfrError(f"{name} offset {off} outside the chunk (size {size})", offset)
    if tps <= 0:
        raise JfrError(f"ticks per second must be positive (got {tps})", offset)
    return ChunkHeader(offset, major, minor, size, cp, md, start_ns, dur_ns, start_ticks, tps,
                       state, flags)


@dataclass(slots=True)
class Event:
    type: ClassDesc
    values: dict[str, Any]
    chunk: Chunk

    @property
    def name(self) -> str:
        return self.type.name

    def get(self, field: str) -> Any:
        """A field fully resolved (constant pools followed), as ``jfr print`` shows it."""
        for fd in self.type.fields:
            if fd.name == field:
                return self.chunk.resolve_field(fd.type_id, fd.constant_pool, fd.array,
                                                self.values.get(field))
        raise KeyError(field)


class Chunk:
    """One parsed chunk: header, metadata, constant pools; events on demand."""

    def __init__(self, header: ChunkHeader, data: bytes) -> None:
        if len(data) != header.size:
            raise JfrError(f"truncated chunk: {len(data)} of {header.size} bytes",
                           header.offset)
        self.header = header
        self.data = data
        self.pools: dict[int, dict[int, Any]] = {}
        self.metadata_positions = {header.metadata_offset}
        self.metadata, self.decoders = self._cached_metadata(header.metadata_offset)
        self._read_pools()

    # -- structure -----------------------------------------------------------------
    def cursor(self, pos: int = 0, end: int | None = None) -> Cursor:
        return make_cursor(self.data, pos, end, base=self.header.offset,
                           compressed=self.header.compressed)

    def _event_bounds(self, pos: int) -> tuple[Cursor, int, int]:
        cur = self.cursor(pos)
        size = cur.i32()
        if size <= 0 or pos + size > len(self.data):
            raise cur.error(f"event size {size} does not fit in the chunk")
        cur.end = pos + size
        return cur, cur.i64(), pos + size

    def _read_metadata(self, pos: int) -> Metadata:
        cur, type_id, end = self._event_bounds(pos)
        if type_id != METADATA_TYPE:
            raise cur.error(f"metadata offset points at an event of type {type_id}")
        return read_metadata(cur, end)

    def _cached_metadata(self, pos: int) -> tuple[Metadata, Decoders]:
        """Chunks of one recording repeat the same metadata: parse it (and
        compile its decoders) once, keyed by its bytes after the timestamps."""
        cur, type_id, end = self._event_bounds(pos)
        if type_id != METADATA_TYPE:
            raise cur.error(f"metadata offset points at an event of type {type_id}")
        cur.i64()
        cur.i64()
        key = (self.header.compressed, hashlib.sha1(self.data[cur.pos:end]).digest())
        with _CACHE_LOCK:
            hit = _METADATA_CACHE.pop(key, None)
            if hit is not None:
                _METADATA_CACHE[key] = hit
                return hit
        metadata = self._read_metadata(pos)
        made = (metadata, Decoders(metadata, self.header.compressed))
        with _CACHE_LOCK:
            _METADATA_CACHE[key] = made
            while len(_METADATA_CACHE) > _METADATA_CACHE_SIZE:
                del _METADATA_CACHE[next(iter(_METADATA_CACHE))]
        return made

    def _read_pools(self) -> None:
        pos, delta = 0, self.header.cp_offset
        seen: set[int] = set()
        while delta != 0:
            pos += delta
            if pos in seen or len(seen) > _MAX_CHECKPOINTS or not 0 < pos < len(self.data):
                raise JfrError(f"bad constant-pool chain at chunk offset {pos}",
                               self.header.offset + max(pos, 0))
            seen.add(pos)
            cur, type_id, _ = self._event_bounds(pos)
            if type_id != CHECKPOINT_TYPE:
                raise cur.error(f"constant-pool chain points at an event of type {type_id}")
            cur.i64()                       # start
            cur.i64()                       # duration
            delta = cur.i64()
            cur.u8()                         # checkpoint type (flush, statics, thread...)
            for _ in range(cur.count("constant pools")):
                class_id = cur.i64()
                reader = self.decoders.for_class(class_id)
                pool = self.pools.setdefault(class_id, {})
                for _ in range(cur.count("constant-pool entries")):
                    key = cur.i64()
                    value = reader(cur)
                    pool.setdefault(key, value)

    # -- events --------------------------------------------------------------------
    def raw_events(self) -> Iterator[tuple[int, int, int, int]]:
        """(type id, event start, body start, end) for every event, checkpoints
        and metadata included, in file order."""
        pos, end = HEADER_SIZE, len(self.data)
        cur = self.cursor(pos)
        while pos < end:
            cur.pos, cur.end = pos, end
            size = cur.i32()
            if size <= 0 or pos + size > end:
                raise cur.error(f"event size {size} does not fit in the chunk")
            cur.end = pos + size
            type_id = cur.i64()
            yield type_id, pos, cur.pos, pos + size
            pos += size

    def type_name(self, type_id: int) -> str:
        if type_id == METADATA_TYPE:
            return "jdk.Metadata"
        if type_id == CHECKPOINT_TYPE:
            return "jdk.CheckPoint"
        desc = self.metadata.classes.get(type_id)
        return desc.name if desc is not None else f"<unknown type {type_id}>"

    def events(self, names: frozenset[str] | set[str] | None = None) -> Iterator[Event]:
        """Decoded events, optionally only those named; others are skipped by size."""
        wanted: dict[int, ClassDesc | None] = {}
        cur = self.cursor()
        for type_id, start, body, end in self.raw_events():
            if type_id == METADATA_TYPE:
                if start not in self.metadata_positions:
                    self._merge_metadata(start)
                    wanted.clear()
                continue
            if type_id == CHECKPOINT_TYPE:
                continue
            if type_id in wanted:
                desc = wanted[type_id]
            else:
                desc = self.metadata.classes.get(type_id)
                if desc is not None and names is not None and desc.name not in names:
                    desc = None
                wanted[type_id] = desc
            if desc is not None:
                cur.pos, cur.end = body, end
                values = self.decoders.for_class(type_id)(cur)
                yield Event(desc, values, self)

    def _merge_metadata(self, start: int) -> None:
        """A metadata event other than the header's: add any classes it adds."""
        self.metadata_positions.add(start)
        newer = self._read_metadata(start)
        old = self.metadata            # shared through the cache: never mutate it
        classes = {**newer.classes, **old.classes}
        self.metadata = Metadata(old.id, old.start_ticks, classes,
                                 {d.name: d for d in classes.values()}, old.region)
        self.decoders = Decoders(self.metadata, self.header.compressed)

    # -- time ----------------------------------------------------------------------
    def ticks_to_ns(self, ticks: int) -> int:
        return ticks * 1_000_000_000 // self.header.ticks_per_second

    def epoch_ns(self, ticks: int) -> int:
        return self.header.start_ns + self.ticks_to_ns(ticks - self.header.start_ticks)

    # -- constant pools ------------------------------------------------------------
    def pool_entry(self, class_id: int, key: int) -> Any:
        pool = self.pools.get(class_id)
        return None if pool is None else pool.get(key)

    def text(self, value: Any) -> str | None:
        """A decoded string, following ``java.lang.String`` pool references."""
        if isinstance(value, PoolString):
            desc = self.metadata.by_name.get("java.lang.String")
            got = self.pool_entry(desc.id, value.key) if desc is not None else None
            return got if isinstance(got, str) else None
        return value if isinstance(value, str) or value is None else str(value)

    def resolve_field(self, type_id: int, constant_pool: bool, array: bool, value: Any,
                      depth: int = 0) -> Any:
        if array:
            if not isinstance(value, list):
                return None
            return [self.resolve_field(type_id, constant_pool, False, v, depth) for v in value]
        if constant_pool:
            if depth >= _MAX_RESOLVE_DEPTH or not isinstance(value, int):
                return None
            entry = self.pool_entry(type_id, value)
            return None if entry is None else self.resolve_value(type_id, entry, depth + 1)
        return self.resolve_value(type_id, value, depth)

    def resolve_value(self, type_id: int, value: Any, depth: int = 0) -> Any:
        """Follow every constant-pool reference in ``value``; simple types (one
        field) collapse to that field's value, as ``jfr print`` shows them."""
        desc = self.metadata.classes.get(type_id)
        if desc is None or desc.is_primitive:
            return self.text(value) if isinstance(value, PoolString) else value
        if not isinstance(value, dict):
            return value
        out = {fd.name: self.resolve_field(fd.type_id, fd.constant_pool, fd.array,
                                           value.get(fd.name), depth)
               for fd in desc.fields}
        if desc.simple_type and len(desc.fields) == 1:
            return out[desc.fields[0].name]
        return out

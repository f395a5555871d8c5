"""Read a recording chunk by chunk from a file object, with bounded memory:
only one chunk's bytes (and its constant pools) are held at a time.

Problems are reported per chunk: a chunk whose contents do not parse is
handed to ``on_error`` and skipped (its size is known from the header); a
bad header or a truncated chunk ends the file, since the next chunk cannot be
found reliably. Anything unexpected raised while parsing garbage is turned
into :class:`JfrError` here, so callers only ever see that.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO

from telegen.formats.jfr.chunk import HEADER_SIZE, Chunk, Event, parse_header
from telegen.formats.jfr.errors import JfrError

DEFAULT_MAX_CHUNK_BYTES = 512 << 20
_DECODE_ERRORS = (IndexError, KeyError, ValueError, TypeError, OverflowError, RecursionError,
                  UnicodeError, struct.error, MemoryError, AttributeError)
ErrorHandler = Callable[[JfrError], None]


def wrap(exc: BaseException, where: str) -> JfrError:
    return JfrError(f"{where}: {type(exc).__name__}: {exc}")


def read_chunks(f: IO[bytes], *, on_error: ErrorHandler | None = None,
                max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> Iterator[Chunk]:
    """Yield each chunk of ``f``. Errors go to ``on_error`` (the bad chunk is
    skipped) or, without one, are raised as :class:`JfrError`."""
    offset = 0
    while True:
        try:
            raw = f.read(HEADER_SIZE)
        except OSError as exc:
            _report(JfrError(f"read failed: {exc}", offset), on_error)
            return
        if not raw:
            return
        try:
            header = parse_header(raw, offset)
        except JfrError as exc:
            _report(exc, on_error)
            return
        if header.size > max_chunk_bytes:
            _report(JfrError(f"chunk of {header.size} bytes exceeds the limit of "
                             f"{max_chunk_bytes}", offset), on_error)
            if not _skip(f, header.size - HEADER_SIZE):
                return
            offset += header.size
            continue
        rest = f.read(header.size - HEADER_SIZE)
        if len(rest) < header.size - HEADER_SIZE:
            _report(JfrError(f"truncated chunk: {HEADER_SIZE + len(rest)} of {header.size} "
                             f"bytes", offset), on_error)
            return
        offset += header.size
        try:
            chunk = Chunk(header, raw + rest)
        except JfrError as exc:
            _report(exc, on_error)
            continue
        except _DECODE_ERRORS as exc:
            _report(wrap(exc, f"chunk at byte {header.offset}"), on_error)
            continue
        yield chunk


def _report(exc: JfrError, on_error: ErrorHandler | None) -> None:
    if on_error is None:
        raise exc
    on_error(exc)


def _skip(f: IO[bytes], n: int) -> bool:
    try:
        f.seek(n, 1)
        return True
    except (OSError, ValueError):
        while n > 0:
            block = f.read(min(n, 1 << 20))
            if not block:
                return False
            n -= len(block)
        return True


def events(chunk: Chunk, names: frozenset[str] | set[str] | None = None) -> Iterator[Event]:
    """``chunk.events(names)`` with every decoding failure as :class:`JfrError`."""
    try:
        yield from chunk.events(names)
    except JfrError:
        raise
    except _DECODE_ERRORS as exc:
        raise wrap(exc, f"chunk at byte {chunk.header.offset}") from exc


def count_events(chunk: Chunk) -> Counter[str]:
    """Events per type name, metadata and checkpoints included (like ``jfr summary``)."""
    counts: Counter[str] = Counter()
    try:
        for type_id, _start, _body, _end in chunk.raw_events():
            counts[chunk.type_name(type_id)] += 1
    except _DECODE_ERRORS as exc:
        raise wrap(exc, f"chunk at byte {chunk.header.offset}") from exc
    return counts


def summarize(path: str, on_error: ErrorHandler | None = None) -> Counter[str]:
    """Event counts per type over a whole file, chunk by chunk."""
    total: Counter[str] = Counter()
    with open(path, "rb") as f:
        for chunk in read_chunks(f, on_error=on_error):
            try:
                total.update(count_events(chunk))
            except JfrError as exc:
                _report(exc, on_error)
    return total

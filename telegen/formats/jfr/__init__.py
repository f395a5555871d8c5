"""A JFR (Java Flight Recorder) reader written for telegen, in pure Python.

There is no official specification of the format; this follows what the
JDK's own tools (``jfr summary``, ``jfr metadata``, ``jfr print --json``)
show about real recordings. Layers, bottom up:

* ``reader``   -- a cursor over one chunk's bytes: compressed or fixed-width
  integers, floats, the six string encodings.
* ``metadata`` -- the metadata event: string table and class/field tree.
* ``values``   -- per-class decoders compiled from the metadata.
* ``chunk``    -- chunk header, constant-pool chain, event stream.
* ``stream``   -- chunk-by-chunk reading from a file object (bounded memory),
  per-chunk error reporting; only :class:`JfrError` escapes.
* ``jdk``      -- views of the JDK types: stack traces, frames, threads.
* ``topdata``  -- events to telegen profiles (cpu, alloc, mutex, park, gc).
"""

from __future__ import annotations

from telegen.formats.jfr.chunk import Chunk, ChunkHeader, Event, parse_header
from telegen.formats.jfr.errors import JfrError
from telegen.formats.jfr.reader import Cursor, PoolString
from telegen.formats.jfr.stream import count_events, events, read_chunks, summarize

__all__ = [
    "Chunk", "ChunkHeader", "Cursor", "Event", "JfrError", "PoolString", "count_events",
    "events", "parse_header", "read_chunks", "summarize",
]

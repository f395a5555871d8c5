"""Bounded reads and the agent's one gunzip. Every byte string that comes from
an untrusted source is read with a limit known before the read, and every
gzip is inflated with an output limit known before inflating."""

from __future__ import annotations

import io
import os
import stat
import zlib
from typing import BinaryIO

from telegen.untrusted.refusals import Refused

MiB = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


def read_fd(fd: int, limit: int) -> bytes:
    """All of a file descriptor's content, at most ``limit`` bytes. A regular
    file whose size says it is larger is refused before anything is read
    (a sparse 1 TB file costs nothing); a file that grows while read is
    refused after ``limit + 1`` bytes."""
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_size > limit:
        raise Refused("too_large", f"{st.st_size} bytes > limit {limit}")
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise Refused("too_large", f"more than limit {limit} bytes")
    return b"".join(parts)


def read_stream(f: BinaryIO, limit: int, length: int | None = None) -> bytes:
    """A body of declared ``length`` (e.g. Content-Length), refused before
    reading when it is over ``limit``; with no length, read until EOF and
    refuse past ``limit``. A short body (peer closed early) raises
    ``Refused("truncated")``."""
    if length is not None:
        if length < 0:
            raise Refused("bad_length", str(length))
        if length > limit:
            raise Refused("too_large", f"declared {length} bytes > limit {limit}")
        data = f.read(length)
        if len(data) != length:
            raise Refused("truncated", f"{len(data)} of {length} bytes")
        return data
    data = f.read(limit + 1)
    if len(data) > limit:
        raise Refused("too_large", f"more than limit {limit} bytes")
    return data


def gunzip(data: bytes, limit: int, *, nested: bool = False) -> bytes:
    """Inflate gzip ``data`` (all members) to at most ``limit`` bytes. Output
    that is itself gzip is refused (``nested_gzip``) unless ``nested``: a
    double-gzipped body is how a limit on one layer is bypassed."""
    out: list[bytes] = []
    total = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            buf = rest
            while buf:
                chunk = d.decompress(buf, min(_CHUNK, limit + 1 - total))
                out.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise Refused("decompressed_too_large", f"more than {limit} bytes")
                buf = d.unconsumed_tail
            tail = d.flush(limit + 1 - total)
            out.append(tail)
            total += len(tail)
            if total > limit:
                raise Refused("decompressed_too_large", f"more than {limit} bytes")
            if not d.eof:
                raise Refused("bad_gzip", "truncated stream")
            rest = d.unused_data
            if rest and not rest.startswith(_GZIP_MAGIC):
                break  # trailing garbage after the last member: ignored, as gzip(1) warns
    except zlib.error as e:
        raise Refused("bad_gzip", str(e)) from None
    result = b"".join(out)
    if not nested and result.startswith(_GZIP_MAGIC):
        raise Refused("nested_gzip", "gzip inside gzip")
    return result


def maybe_gunzip(data: bytes, limit: int) -> bytes:
    """``data`` inflated if it is gzip, else as it is; either way at most
    ``limit`` bytes."""
    if data.startswith(_GZIP_MAGIC):
        return gunzip(data, limit)
    if len(data) > limit:
        raise Refused("too_large", f"{len(data)} bytes > limit {limit}")
    return data


class _CappedRaw(io.RawIOBase):
    """A descriptor read to at most ``limit`` bytes; one more is refused."""

    def __init__(self, fd: int, limit: int, name: str) -> None:
        self._fd, self._left, self._limit, self._name = fd, limit, limit, name

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buf), self._left + 1)
        data = os.read(self._fd, want)
        if len(data) > self._left:
            raise Refused("too_large", f"{self._name}: more than {self._limit} bytes")
        self._left -= len(data)
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def capped_reader(fd: int, limit: int, name: str) -> BinaryIO:
    """A buffered reader over ``fd`` (owned by it) that refuses a file whose
    size is over ``limit`` before reading, and one that grows past it while
    read."""
    size = os.fstat(fd).st_size
    if size > limit:
        raise Refused("too_large", f"{name}: {size} bytes > limit {limit}")
    return io.BufferedReader(_CappedRaw(fd, limit, name))  # type: ignore[return-value]

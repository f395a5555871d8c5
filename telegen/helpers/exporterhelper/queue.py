"""Bounded request queues: in memory, or on disk (one file per request) so
queued data survives restarts and crashes.

The on-disk queue writes each request atomically (hidden temp file, fsync,
rename, fsync of the directory) as ``<seq>.req`` and deletes it only after
the request was sent or dropped for good; files present at start-up are
queued again, oldest first. A request that was being sent when the agent died
is sent again (at-least-once), never lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from telegen.helpers.files import atomic_write
from telegen.untrusted import Refused, read_regular

_MAGIC = b"TGQ1"
_NAME = re.compile(r"^(\d{16})\.req$")
# Larger than any request an exporter writes (gRPC messages are capped at 64 MiB).
MAX_REQUEST_FILE = 128 * 1024 * 1024


@dataclass
class Request:
    """One export call: the encoded payload plus what the sender needs to know."""

    payload: bytes
    samples: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        header = json.dumps({"samples": self.samples, "meta": self.meta}).encode()
        return _MAGIC + struct.pack(">I", len(header)) + header + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Request:
        if data[:4] != _MAGIC or len(data) < 8:
            raise ValueError("not a queued request (bad magic)")
        (n,) = struct.unpack(">I", data[4:8])
        header = json.loads(data[8:8 + n])
        meta = header["meta"]
        if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ValueError("not a queued request (bad meta)")
        return cls(data[8 + n:], int(header["samples"]), dict(meta))


class Queue(Protocol):
    def put(self, request: Request) -> bool: ...
    def get(self, timeout_s: float) -> tuple[object, Request] | None: ...
    def done(self, handle: object) -> None: ...
    def size(self) -> int: ...


class MemoryQueue:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[Request] = deque()
        self._cond = threading.Condition()

    def put(self, request: Request) -> bool:
        with self._cond:
            if len(self._items) >= self._capacity:
                return False
            self._items.append(request)
            self._cond.notify()
            return True

    def get(self, timeout_s: float) -> tuple[object, Request] | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout_s)
            if not self._items:
                return None
            request = self._items.popleft()
            return request, request

    def done(self, handle: object) -> None:
        pass

    def size(self) -> int:
        return len(self._items)


class PersistentQueue:
    """Requests as files in ``directory``; ``size`` counts queued and in-flight."""

    def __init__(self, directory: Path, capacity: int, logger: logging.Logger) -> None:
        self._dir = directory
        self._capacity = capacity
        self._log = logger
        self._pending: deque[Path] = deque()
        self._inflight: set[Path] = set()
        self._cond = threading.Condition()
        self._seq = 0
        self.corrupt = 0

    def open(self) -> int:
        """Create the directory (fails fast) and queue what a previous run left."""
        self._dir.mkdir(parents=True, exist_ok=True)
        found: list[tuple[int, Path]] = []
        for entry in os.scandir(self._dir):
            m = _NAME.match(entry.name)
            if m:
                found.append((int(m.group(1)), Path(entry.path)))
            elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                _unlink(Path(entry.path))   # a write the crash interrupted
        found.sort()
        with self._cond:
            self._pending.extend(p for _, p in found)
            self._seq = found[-1][0] + 1 if found else 0
        return len(found)

    def put(self, request: Request) -> bool:
        with self._cond:
            if len(self._pending) + len(self._inflight) >= self._capacity:
                return False
            seq, self._seq = self._seq, self._seq + 1
        final = self._dir / f"{seq:016d}.req"
        atomic_write(final, request.to_bytes())
        with self._cond:
            self._pending.append(final)
            self._cond.notify()
        return True

    def get(self, timeout_s: float) -> tuple[object, Request] | None:
        while True:
            with self._cond:
                if not self._pending:
                    self._cond.wait(timeout_s)
                if not self._pending:
                    return None
                path = self._pending.popleft()
                self._inflight.add(path)
            try:
                return path, Request.from_bytes(_read_request_file(path))
            except (OSError, ValueError, KeyError, TypeError, Refused) as exc:
                self.corrupt += 1
                self._log.error("dropping unreadable queued request %s: %s", path, exc)
                self.done(path)

    def done(self, handle: object) -> None:
        assert isinstance(handle, Path)
        _unlink(handle)
        with self._cond:
            self._inflight.discard(handle)

    def release(self, handle: object) -> None:
        """Forget an in-flight request without deleting it (sent again next start)."""
        with self._cond:
            self._inflight.discard(handle)  # type: ignore[arg-type]

    def size(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._inflight)


def _read_request_file(path: Path) -> bytes:
    """A queue file's bytes: a regular file (not a symlink, FIFO or device:
    opened with O_NOFOLLOW | O_NONBLOCK), at most MAX_REQUEST_FILE bytes. The
    URL a request goes to never comes from here (exporters build it from their
    config); this only keeps a planted file from blocking or exhausting the
    sender."""
    return read_regular(str(path), MAX_REQUEST_FILE)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


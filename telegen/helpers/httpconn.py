"""One client connection of :mod:`telegen.helpers.httpserver` as its selector
thread sees it, and the parse of a request head done there (before any
handler runs, so the head can be checked and the body's size known)."""

from __future__ import annotations

import http.client
import io
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RequestHead:
    method: str
    version: str
    host: str | None      # the Host header; None when absent
    length: int           # Content-Length; -1 when absent
    chunked: bool         # a Transfer-Encoding header was sent
    expect_continue: bool
    size: int             # bytes of the head, blank line included


def parse_head(buf: bytearray, max_bytes: int) -> RequestHead | None:
    """The head at the start of ``buf``; None while incomplete. ValueError
    when malformed, or ``too long`` past ``max_bytes``."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    if not ends:
        if len(buf) > max_bytes:
            raise ValueError(f"head too long (> {max_bytes} bytes)")
        return None
    size = min(ends)
    if size > max_bytes:
        raise ValueError(f"head too long ({size} > {max_bytes} bytes)")
    line, _, rest = bytes(buf[:size]).partition(b"\n")
    parts = line.decode("iso-8859-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {line[:100]!r}")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except (http.client.HTTPException, UnicodeError) as exc:
        raise ValueError(f"bad headers: {exc}") from None
    hosts = headers.get_all("Host") or []
    if len(hosts) > 1:
        raise ValueError("more than one Host header")
    return RequestHead(method=parts[0].upper(), version=parts[2], host=hosts[0] if hosts else None,
                       length=_content_length(headers), chunked="Transfer-Encoding" in headers,
                       expect_continue=(headers.get("Expect") or "").lower() == "100-continue",
                       size=size)


def _content_length(headers: Any) -> int:
    values = {v.strip() for v in headers.get_all("Content-Length") or []}
    if not values:
        return -1
    if len(values) > 1:
        raise ValueError("conflicting Content-Length headers")
    value = values.pop()
    if not value.isdigit() or len(value) > 18:
        raise ValueError(f"bad Content-Length {value[:30]!r}")
    return int(value)


class Conn:
    """A client connection: its buffer, its timers, and whether a worker has it."""

    __slots__ = ("sock", "addr", "buf", "started", "last_read", "head", "reserved", "busy",
                 "closing", "close_at")

    def __init__(self, sock: socket.socket, addr: Any, now: float) -> None:
        self.sock = sock
        self.addr = addr
        self.buf = bytearray()
        self.started = now        # first byte of the request being read
        self.last_read = now
        self.head: RequestHead | None = None
        self.reserved = 0         # body bytes counted against the server's budget
        self.busy = False         # a worker is answering a request
        self.closing = False      # refused: reading and discarding until close_at
        self.close_at = 0.0

    def received(self, data: bytes, now: float) -> None:
        if not self.buf and self.head is None:
            self.started = now
        self.buf += data
        self.last_read = now

    def next_request(self, now: float) -> None:
        self.head = None
        self.busy = False
        self.started = self.last_read = now

    def send_quietly(self, data: bytes) -> None:
        """A short answer from the selector thread (never blocks; a peer that
        does not read it loses it)."""
        try:
            self.sock.send(data)
        except OSError:
            pass

    def linger(self, until: float) -> None:
        """Stop sending; keep reading (and discarding) until ``until``, so the
        answer is not lost to a reset for unread input."""
        self.closing = True
        self.close_at = until
        self.buf.clear()
        self.head = None
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class SocketWriter(io.BufferedIOBase):
    """``wfile`` of a handler: every write goes out whole (``sendall``)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self._sock.sendall(b)
        return len(b)

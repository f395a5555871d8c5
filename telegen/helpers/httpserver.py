"""The agent's small HTTP servers (metrics, OTLP/HTTP, span view, ui), each
with the same bounds against hostile clients (SECURITY.md):

- One selector thread (named after the server) accepts and reads every
  request — head, then body — itself: an idle or slow client costs a file
  descriptor, never a thread, so 200 half-open connections do not delay the
  next request. A request must complete its head within ``read_timeout`` and
  its body within ``request_timeout``, and no connection may stay silent for
  ``read_timeout``; at ``max_connections`` the connection silent the longest
  is dropped for the new one.
- Before any handler runs: a ``Host`` that is not one of the server's names
  gets 421 (DNS rebinding: a web page whose name resolves to 127.0.0.1 must
  not reach us); a body is refused by its ``Content-Length`` (413 over
  ``max_body``, 411 missing on POST/PUT/PATCH, 501 chunked, 503 when bodies in
  flight would exceed ``max_buffered``) before a byte of it is read.
- A fixed pool of ``workers`` threads runs the ``BaseHTTPRequestHandler`` on
  the complete request (``rfile`` holds exactly that request).

Refusals are counted (``refused_inputs{source,reason}``) and logged once.
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from telegen.helpers.httpconn import Conn, RequestHead, SocketWriter, parse_head
from telegen.helpers.httphosts import HostAllowList
from telegen.untrusted import MiB, Refusals

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_STATUS = {400: "Bad Request", 408: "Request Timeout", 411: "Length Required",
           413: "Content Too Large", 421: "Misdirected Request",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           503: "Service Unavailable"}


@dataclass(frozen=True)
class ServerLimits:
    """What one client may cost a server."""

    max_connections: int = 256      # open connections; the silent longest is dropped
    workers: int = 4                # threads running handlers on complete requests
    read_timeout: float = 10.0      # silence allowed; also the deadline of a request head
    request_timeout: float = 60.0   # head + body of one request
    max_header_bytes: int = 64 << 10
    max_body: int = 64 << 10        # per request; Content-Length over it -> 413
    max_buffered: int = 0           # bodies in flight in all (0: 4 * max_body, >= 1 MiB)

    def buffered_budget(self) -> int:
        return self.max_buffered or max(4 * self.max_body, MiB)


def reply(handler: BaseHTTPRequestHandler, code: int, ctype: str, body: bytes,
          headers: dict[str, str] | None = None) -> None:
    """Send one complete response (status, type, length, extra headers, body)."""
    handler.send_response(code)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port``, ``:port`` = 127.0.0.1) → (host, port)."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class BackgroundHTTPServer:
    """Binds in the constructor (so a busy port fails start-up at once);
    ``start`` serves on a named thread, ``stop`` shuts down and closes."""

    def __init__(self, endpoint: str, handler: type[BaseHTTPRequestHandler], name: str, *,
                 limits: ServerLimits | None = None, allowed_hosts: Iterable[str] = (),
                 refusals: Refusals | None = None, source: str = "") -> None:
        host, port = split_endpoint(endpoint)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.address: tuple[str, int] = tuple(self._listener.getsockname()[:2])  # type: ignore[assignment]
        self.port = self.address[1]
        self.limits = limits or ServerLimits()
        self.hosts = HostAllowList(host, allowed_hosts)
        self._handler = handler
        self._name = name
        self._source = source or name
        self._log = logging.getLogger(f"telegen.http.{name}")
        self.refusals = refusals or Refusals(None, self._log)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._returned: list[tuple[Conn, bool]] = []   # (connection, keep it) from workers
        self._conns: dict[socket.socket, Conn] = {}
        self._buffered = 0                 # bytes of bodies reserved (loop thread only)
        self._released = 0                 # given back by workers (under _lock)
        self._lock = threading.Lock()
        self._stopping = False
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=f"{name}-worker")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self._conns.values()):
            conn.close()
        self._conns.clear()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._selector.close()

    @property
    def connections(self) -> int:
        """Open client connections (for tests and telemetry)."""
        return len(self._conns)

    # -- the selector thread -------------------------------------------------------
    def _loop(self) -> None:
        sel = self._selector
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        while not self._stopping:
            try:
                for key, _ in sel.select(timeout=0.25):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._take_returned()
                    else:
                        conn = self._conns.get(key.fileobj)  # type: ignore[call-overload]
                        if conn is not None:
                            self._readable(conn)
                self._expire(time.monotonic())
            except Exception:   # the server must outlive any one connection
                if self._stopping:
                    return
                self._log.exception("%s: serving loop", self._name)
                time.sleep(0.05)

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # EMFILE and the like: make room, keep serving
                self.refusals.note(self._source, "accept_failed", str(exc))
                if not self._evict():
                    time.sleep(0.01)   # the listener stays readable: do not spin
                return
            if len(self._conns) >= self.limits.max_connections and not self._evict():
                self.refusals.note(self._source, "too_many_connections",
                                   f"{len(self._conns)} open")
                sock.close()
                continue
            sock.setblocking(False)
            conn = Conn(sock, addr, time.monotonic())
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Close the idle connection silent the longest; False if all are busy."""
        idle = [c for c in self._conns.values() if not c.busy]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last_read)
        self.refusals.note(self._source, "too_many_connections",
                           f"dropped a connection silent for "
                           f"{time.monotonic() - oldest.last_read:.1f}s")
        self._drop(oldest)
        return True

    def _drop(self, conn: Conn) -> None:
        self._conns.pop(conn.sock, None)
        self._release(conn)
        if not conn.busy:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.close()

    def _readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if conn.closing:            # an answered refusal: discard until the peer closes
            return
        conn.received(data, time.monotonic())
        self._advance(conn)

    def _advance(self, conn: Conn) -> None:
        """Parse the head once complete, check it, and hand a complete request on."""
        lim = self.limits
        if conn.head is None:
            try:
                head = parse_head(conn.buf, lim.max_header_bytes)
            except ValueError as exc:
                too_long = "too long" in str(exc)
                self._refuse(conn, 431 if too_long else 400,
                             "header_too_large" if too_long else "bad_request", str(exc))
                return
            if head is None:
                return
            if not self._admit(conn, head):
                return
            conn.head = head
            self._buffered += head.length
            conn.reserved = head.length
            if head.expect_continue and len(conn.buf) < head.size + head.length:
                conn.send_quietly(b"HTTP/1.1 100 Continue\r\n\r\n")
        need = conn.head.size + conn.head.length
        if len(conn.buf) < need:
            return
        request = bytes(conn.buf[:need])
        del conn.buf[:need]
        conn.busy = True
        self._selector.unregister(conn.sock)
        self._pool.submit(self._work, conn, request)

    def _admit(self, conn: Conn, head: RequestHead) -> bool:
        lim = self.limits
        if head.host is None:
            if head.version != "HTTP/1.0":
                return self._refuse(conn, 400, "no_host", "HTTP/1.1 request without Host")
        elif not self.hosts.allows(head.host):
            return self._refuse(conn, 421, "host", f"Host {head.host!r}")
        if head.chunked:
            return self._refuse(conn, 501, "chunked", "chunked bodies are not accepted")
        if head.length < 0:
            if head.method in _BODY_METHODS:
                return self._refuse(conn, 411, "no_length", f"{head.method} without Content-Length")
            head.length = 0
        if head.length > lim.max_body:
            return self._refuse(conn, 413, "too_large",
                                f"declared {head.length} bytes > limit {lim.max_body}")
        with self._lock:
            self._buffered -= self._released
            self._released = 0
        if head.length and self._buffered + head.length > lim.buffered_budget():
            return self._refuse(conn, 503, "busy", f"{self._buffered} bytes of bodies in flight",
                                {"Retry-After": "1"})
        return True

    def _refuse(self, conn: Conn, code: int, reason: str, detail: str,
                headers: dict[str, str] | None = None) -> bool:
        """Answer ``code`` from the selector thread, count, and close (lingering)."""
        self.refusals.note(self._source, reason, detail)
        body = f"{_STATUS.get(code, 'Error')}: {reason}\n".encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        conn.send_quietly(f"HTTP/1.1 {code} {_STATUS.get(code, 'Error')}\r\n"
                          f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                          f"Connection: close\r\n{extra}\r\n".encode() + body)
        conn.linger(time.monotonic() + 1.0)
        return False

    def _expire(self, now: float) -> None:
        lim = self.limits
        for conn in list(self._conns.values()):
            if conn.busy:
                continue
            if conn.closing:
                if now > conn.close_at:
                    self._drop(conn)
                continue
            if not conn.buf and conn.head is None:     # idle between requests
                if now - conn.last_read > lim.read_timeout:
                    self._drop(conn)
                continue
            limit = lim.read_timeout if conn.head is None else lim.request_timeout
            if now - conn.last_read > lim.read_timeout or now - conn.started > limit:
                self._release(conn)
                self._refuse(conn, 408, "timeout",
                             f"request incomplete after {now - conn.started:.1f}s")

    def _release(self, conn: Conn) -> None:
        with self._lock:
            self._released += conn.reserved
        conn.reserved = 0

    def _take_returned(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            returned, self._returned = self._returned, []
        now = time.monotonic()
        for conn, keep in returned:
            if not keep:
                self._conns.pop(conn.sock, None)
                continue
            conn.next_request(now)
            self._selector.register(conn.sock, selectors.EVENT_READ)
            if conn.buf:
                conn.started = now
                self._advance(conn)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # -- a worker ------------------------------------------------------------------
    def _work(self, conn: Conn, request: bytes) -> None:
        keep = False
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(self.limits.read_timeout)
            keep = self._handle(conn, request)
        except Exception as exc:    # one request must never hurt the server
            self._log.debug("%s: request from %s failed: %s", self._name, conn.addr, exc)
        finally:
            self._release(conn)
            if keep and not self._stopping:
                conn.sock.setblocking(False)
            else:
                conn.close()
            with self._lock:
                self._returned.append((conn, keep))
            self._wake()

    def _handle(self, conn: Conn, request: bytes) -> bool:
        """Run the handler class on one complete request; True to keep the connection."""
        h = self._handler.__new__(self._handler)
        h.request = h.connection = conn.sock
        h.client_address = conn.addr
        h.server = self  # type: ignore[assignment]
        h.rfile = io.BytesIO(request)
        h.wfile = SocketWriter(conn.sock)  # type: ignore[assignment]
        h.close_connection = True
        h.handle_expect_100 = lambda: True  # type: ignore[method-assign]  # sent by the loop
        h.handle_one_request()
        return not h.close_connection

"""The agent's small HTTP servers (metrics, OTLP/HTTP, span view, ui): a
``ThreadingHTTPServer`` served by one named daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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

    def __init__(self, endpoint: str, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer(split_endpoint(endpoint), handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.address: tuple[str, int] = (str(host), int(port))
        self.port = self.address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=name,
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

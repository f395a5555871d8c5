"""One HTTP GET of a pprof endpoint, with a deadline, a body-size limit and a
reason for every failure. Connections in flight can be aborted (shutdown).

Failure reasons (the ``reason`` label of ``go_scrape_errors``):

``down``        connection refused / reset / unreachable
``timeout``     no complete answer within the deadline
``http_status`` an answer other than 200
``too_large``   the body (or its gunzipped form) exceeds ``max_body_bytes``
``nested_gzip`` the gunzipped body is gzip again (how one layer's limit is bypassed)
``not_pprof``   the body is not a pprof profile

The body is inflated once, by the trust boundary's bounded gunzip
(:func:`telegen.untrusted.gunzip` through :func:`telegen.formats.pprof.decode`).
``too_large`` and ``nested_gzip`` are also counted as
``refused_inputs{source="go_scrape"}`` when the scraper is given ``refusals``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from telegen.formats.pprof import PprofError, decode
from telegen.pdata import Profile
from telegen.untrusted import Refusals

REASONS = ("down", "timeout", "http_status", "too_large", "nested_gzip", "not_pprof")
SOURCE = "go_scrape"
# the trust boundary's reasons -> ours
_REFUSED = {"decompressed_too_large": "too_large", "nested_gzip": "nested_gzip"}
_CHUNK = 64 << 10


class ScrapeError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Aborted(Exception):
    """The scraper was closed while the request was in flight."""


class Scraper:
    def __init__(self, *, max_body_bytes: int, user_agent: str = "telegen-go-receiver",
                 refusals: Refusals | None = None) -> None:
        self._max = max_body_bytes
        self._refusals = refusals
        self._agent = user_agent
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._closed = False

    def fetch_profile(self, url: str, timeout_s: float) -> Profile:
        """GET ``url`` and decode it as pprof (ScrapeError / Aborted on failure)."""
        data = self.get(url, timeout_s)
        try:
            return decode(data, max_decompressed=self._max)
        except PprofError as exc:
            reason = _REFUSED.get(exc.reason, "not_pprof")
            if reason != "not_pprof":
                self._refuse(reason, f"{url}: {exc}")
            raise ScrapeError(reason, str(exc)) from None

    def _refuse(self, reason: str, detail: str) -> None:
        if self._refusals is not None:
            self._refusals.note(SOURCE, reason, detail)

    def get(self, url: str, timeout_s: float) -> bytes:
        """The 200 body of ``url`` read within ``timeout_s`` in all."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + timeout_s
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout_s,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=timeout_s)
        with self._lock:
            if self._closed:
                raise Aborted(url)
            self._open.add(conn)
        try:
            conn.request("GET", path, headers={"User-Agent": self._agent,
                                               "Accept-Encoding": "identity"})
            _set_remaining(conn, deadline)
            resp = conn.getresponse()
            if resp.status != 200:
                body = resp.read(512).decode("utf-8", "replace").strip().splitlines()
                raise ScrapeError("http_status", f"HTTP {resp.status} {resp.reason}"
                                  + (f": {body[0][:200]}" if body else ""))
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self._max:
                self._refuse("too_large", f"{url}: Content-Length {length}")
                raise ScrapeError("too_large", f"body of {length} bytes exceeds "
                                               f"max_body_bytes {self._max}")
            chunks: list[bytes] = []
            size = 0
            while True:
                _set_remaining(conn, deadline)
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self._max:
                    self._refuse("too_large", f"{url}: more than {self._max} bytes")
                    raise ScrapeError("too_large", f"body exceeds max_body_bytes {self._max}")
                chunks.append(chunk)
            return b"".join(chunks)
        except ScrapeError:
            raise
        except TimeoutError as exc:
            self._raise_if_closed(url)
            raise ScrapeError("timeout", f"no answer within {timeout_s:g}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._raise_if_closed(url)
            raise ScrapeError("down", f"{type(exc).__name__}: {exc}") from exc
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _raise_if_closed(self, url: str) -> None:
        if self._closed:
            raise Aborted(url)

    def close(self) -> None:
        """Abort every request in flight; later requests raise Aborted."""
        with self._lock:
            self._closed = True
            conns = list(self._open)
        for conn in conns:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _set_remaining(conn: http.client.HTTPConnection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    if conn.sock is not None:
        conn.sock.settimeout(left)

"""A small debuginfod client: ``GET <url>/buildid/<id>/debuginfo``.

Downloads land in ``<cache_dir>/<build-id>/debuginfo`` (the layout of
elfutils' client) after two checks: the size cap and the build-id of the file
itself. A build-id that no server has is remembered for ``negative_ttl_s`` so a
busy profile does not ask again for every sample.

A debuginfod response is untrusted input (SECURITY.md):

* only ``https://`` URLs, or ``http://`` to a loopback host (``localhost``,
  ``127.0.0.0/8``, ``::1``), unless ``allow_insecure``; redirects are followed
  (at most 3) only to URLs that pass the same rule;
* a build-id is lower-case hex (8–128 digits) before it goes into a URL or a
  path;
* one deadline for the whole request (``deadline_s``: connect, headers and
  body): a server trickling one byte a second is cut there, not merely when a
  single read stalls for ``timeout_s``;
* the body is streamed to a temporary file and refused past ``max_size``
  (a larger ``Content-Length`` is refused before reading); a gzip body
  (``Content-Encoding: gzip``) is inflated by :func:`telegen.untrusted.gunzip`
  to at most ``min(max_size, MAX_GZIP)`` (16 MiB) bytes, nested gzip refused;
* ``$https_proxy`` / ``$no_proxy`` are honoured for https (a CONNECT tunnel);
  plain http never goes through a proxy;
* no lock is held over the network: lookups of other build-ids never wait for
  a slow download; a second lookup of the *same* build-id waits for the first
  (bounded by the deadline) instead of downloading it twice.

Refusals are counted as ``refused_inputs{source="debuginfod",reason}`` when a
:class:`~telegen.untrusted.Refusals` is given, and always in ``errors``.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from telegen.cachedir import cache_dir
from telegen.symbols.elf import read_build_id
from telegen.symbols.types import CounterLike, NullCounter
from telegen.untrusted import MiB, Refusals, Refused, gunzip

log = logging.getLogger(__name__)

BUILD_ID = re.compile(r"[0-9a-f]{8,128}")       # use fullmatch (no "$": it allows "\n")
# A gzip body (we ask for identity; debuginfod servers send raw ELF) is
# inflated in memory by untrusted.gunzip: peak ~2x this plus the compressed
# body, so it stays small.
MAX_GZIP = 16 * MiB
MAX_REDIRECTS = 3
_NEGATIVE_LIMIT = 10_000      # build-ids remembered as missing
_CHUNK = 1 << 16


def urls_from_env(value: str | None = None) -> list[str]:
    """``DEBUGINFOD_URLS`` (space separated) as a list."""
    text = os.environ.get("DEBUGINFOD_URLS", "") if value is None else value
    return [u for u in text.split() if u]


def default_cache_dir() -> str:
    return cache_dir("debuginfod")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure: bool = False) -> str:
    """``url`` when a debuginfod client may use it, else ValueError saying why."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.scheme == "http" and not allow_insecure and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"{url!r} is plain http to a non-loopback host: debug files fetched that way can "
            f"be replaced on the network; use https, or set debuginfod_allow_insecure: true")
    return url


class DebuginfodClient:
    def __init__(self, urls: Sequence[str], cache_dir: str, *, timeout_s: float = 5.0,
                 deadline_s: float = 60.0, max_size: int = 1 << 30,
                 negative_ttl_s: float = 600.0, allow_insecure: bool = False,
                 counters: Mapping[str, CounterLike] | None = None,
                 refusals: Refusals | None = None) -> None:
        self.urls: list[str] = []
        self.allow_insecure = allow_insecure
        self._refusals = refusals or Refusals(None, log)
        for u in urls:
            if not u:
                continue
            try:
                self.urls.append(check_url(u.rstrip("/"), allow_insecure=allow_insecure))
            except ValueError as exc:
                self._refusals.note("debuginfod", "insecure_url", str(exc))
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_size = max_size
        self.negative_ttl_s = negative_ttl_s
        counters = counters or {}
        self._hits = counters.get("hits", NullCounter())
        self._misses = counters.get("misses", NullCounter())
        self._errors = counters.get("errors", NullCounter())
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()     # guards the two dicts above, never the network

    def cached_path(self, build_id: str) -> str:
        if not BUILD_ID.fullmatch(build_id):
            raise ValueError(f"not a build-id: {build_id!r}")
        return os.path.join(self.cache_dir, build_id, "debuginfo")

    def debuginfo(self, build_id: str) -> str | None:
        """Local path of the debug file for ``build_id``, fetching it if needed."""
        build_id = build_id.lower()
        if not BUILD_ID.fullmatch(build_id):
            self._refusals.note("debuginfod", "bad_build_id", build_id[:200])
            return None
        if not self.urls:
            return None
        path = self.cached_path(build_id)
        while True:
            if os.path.isfile(path):
                self._hits.add()
                return path
            with self._lock:
                expiry = self._negative.get(build_id)
                if expiry is not None:
                    if time.monotonic() < expiry:
                        return None
                    del self._negative[build_id]
                running = self._inflight.get(build_id)
                if running is None:
                    mine = self._inflight[build_id] = threading.Event()
            if running is None:
                break
            if not running.wait(self.deadline_s * len(self.urls) + 1):
                return None       # the other lookup is stuck past its deadline
        try:
            return self._download(build_id, path)
        finally:
            with self._lock:
                del self._inflight[build_id]
            mine.set()

    def _download(self, build_id: str, path: str) -> str | None:
        errors = 0
        for url in self.urls:
            outcome = self._fetch(url, build_id, path)
            if outcome == "ok":
                self._hits.add()
                return path
            if outcome == "error":
                errors += 1
        if errors:
            self._errors.add()
        else:
            self._misses.add()
        with self._lock:
            self._negative[build_id] = time.monotonic() + self.negative_ttl_s
            while len(self._negative) > _NEGATIVE_LIMIT:
                self._negative.popitem(last=False)
        return None

    def _fetch(self, url: str, build_id: str, path: str) -> str:
        """'ok', 'missing' (the server does not have it) or 'error'."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
        try:
            with os.fdopen(fd, "w+b") as out:
                status = _Download(self, f"{url}/buildid/{build_id}/debuginfo").into(out)
                if status == 404:
                    return "missing"
                if status != 200:
                    log.warning("debuginfod %s: HTTP %s for %s", url, status, build_id)
                    return "error"
            got = _safe_build_id(tmp)
            if got != build_id:
                log.warning("debuginfod %s: file for %s has build-id %r; discarded",
                            url, build_id, got)
                return "error"
            os.replace(tmp, path)
            tmp = ""
            return "ok"
        except Refused as exc:
            self._refusals.note("debuginfod", exc.reason, f"{url}: {build_id}: {exc.detail}")
            return "error"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            log.warning("debuginfod %s: %s for %s", url, exc, build_id)
            return "error"
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


class _Download:
    """One GET with redirects, under one deadline. A watchdog shuts the socket
    down at the deadline, so nothing (connect, headers, a trickled body) can
    outlive it."""

    def __init__(self, client: DebuginfodClient, url: str) -> None:
        self.client = client
        self.url = url
        self.deadline = time.monotonic() + client.deadline_s
        self._conn: http.client.HTTPConnection | None = None
        self._expired = False
        self._guard = threading.Lock()

    def into(self, out: BinaryIO) -> int:
        """HTTP status; on 200 the (inflated) body is in ``out``."""
        timer = threading.Timer(self.client.deadline_s, self._expire)
        timer.daemon = True
        timer.start()
        try:
            return self._get(out)
        except (OSError, http.client.HTTPException):
            if self._expired or time.monotonic() >= self.deadline:
                raise Refused("deadline", f"over {self.client.deadline_s:g}s") from None
            raise
        finally:
            timer.cancel()
            with self._guard:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def _expire(self) -> None:
        with self._guard:
            self._expired = True
            sock = self._conn.sock if self._conn is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _get(self, out: BinaryIO) -> int:
        url = self.url
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            conn = self._connect(parts)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", target, headers={"User-Agent": "telegen-debuginfod",
                                                 "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location") or ""
                nxt = urllib.parse.urljoin(url, location)
                try:
                    url = check_url(nxt, allow_insecure=self.client.allow_insecure)
                except ValueError as exc:
                    raise Refused("insecure_redirect", str(exc)) from None
                continue
            if resp.status != 200:
                return resp.status
            self._body(resp, out)
            return 200
        raise Refused("too_many_redirects", f"more than {MAX_REDIRECTS}")

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Refused("deadline", f"over {self.client.deadline_s:g}s")
        timeout = min(self.client.timeout_s, left)
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            proxy = _https_proxy(host)
            if proxy is None:
                conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout,
                                                   context=ssl.create_default_context())
            else:   # $https_proxy: a CONNECT tunnel, TLS to the server end to end
                conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout,
                                                   context=ssl.create_default_context())
                conn.set_tunnel(host, parts.port or 443)
        else:       # plain http goes to loopback (or was allowed): never through a proxy
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        with self._guard:
            if self._conn is not None:
                self._conn.close()
            self._conn = conn
        conn.connect()
        if self._expired:
            raise Refused("deadline", f"over {self.client.deadline_s:g}s")
        return conn

    def _body(self, resp: http.client.HTTPResponse, out: BinaryIO) -> None:
        gzipped = (resp.getheader("Content-Encoding") or "").strip().lower() == "gzip"
        cap = min(self.client.max_size, MAX_GZIP) if gzipped else self.client.max_size
        length = resp.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > cap:
            raise Refused("too_large", f"Content-Length {int(length)} > cap {cap}")
        size = 0
        while chunk := resp.read1(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise Refused("too_large", f"more than the {cap} byte cap")
            if time.monotonic() >= self.deadline:
                raise Refused("deadline", f"over {self.client.deadline_s:g}s")
            out.write(chunk)
        if self._expired:
            raise Refused("deadline", f"over {self.client.deadline_s:g}s")
        if gzipped:
            out.seek(0)
            data = gunzip(out.read(), cap)
            out.seek(0)
            out.truncate()
            out.write(data)
        out.flush()


def _https_proxy(host: str) -> tuple[str, int] | None:
    """(host, port) of the proxy ``$https_proxy`` names for ``host``, unless
    ``$no_proxy`` exempts it (the agent's environment is trusted)."""
    url = urllib.request.getproxies().get("https")
    if not url or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 8080


def _safe_build_id(path: str) -> str:
    try:
        return read_build_id(path)
    except Exception:
        return ""

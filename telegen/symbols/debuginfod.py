"""A small debuginfod client: ``GET <url>/buildid/<id>/debuginfo``.

Downloads land in ``<cache_dir>/<build-id>/debuginfo`` (the layout of
elfutils' client) after two checks: the size cap and the build-id of the file
itself. A build-id that no server has is remembered for ``negative_ttl_s`` so a
busy profile does not ask again for every sample. The client is synchronous
and bounded by ``timeout_s`` per request.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from telegen.cachedir import cache_dir
from telegen.symbols.elf import read_build_id
from telegen.symbols.types import CounterLike, NullCounter

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{8,128}$")


def urls_from_env(value: str | None = None) -> list[str]:
    """``DEBUGINFOD_URLS`` (space separated) as a list."""
    text = os.environ.get("DEBUGINFOD_URLS", "") if value is None else value
    return [u for u in text.split() if u]


def default_cache_dir() -> str:
    return cache_dir("debuginfod")


class DebuginfodClient:
    def __init__(self, urls: Sequence[str], cache_dir: str, *, timeout_s: float = 5.0,
                 max_size: int = 1 << 30, negative_ttl_s: float = 600.0,
                 counters: Mapping[str, CounterLike] | None = None) -> None:
        self.urls = [u.rstrip("/") for u in urls if u]
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.max_size = max_size
        self.negative_ttl_s = negative_ttl_s
        counters = counters or {}
        self._hits = counters.get("hits", NullCounter())
        self._misses = counters.get("misses", NullCounter())
        self._errors = counters.get("errors", NullCounter())
        self._negative: dict[str, float] = {}
        self._lock = threading.Lock()

    def cached_path(self, build_id: str) -> str:
        return os.path.join(self.cache_dir, build_id, "debuginfo")

    def debuginfo(self, build_id: str) -> str | None:
        """Local path of the debug file for ``build_id``, fetching it if needed."""
        build_id = build_id.lower()
        if not self.urls or not _HEX.match(build_id):
            return None
        with self._lock:
            path = self.cached_path(build_id)
            if os.path.isfile(path):
                self._hits.add()
                return path
            expiry = self._negative.get(build_id)
            if expiry is not None:
                if time.monotonic() < expiry:
                    return None
                del self._negative[build_id]
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
            self._negative[build_id] = time.monotonic() + self.negative_ttl_s
            return None

    def _fetch(self, url: str, build_id: str, path: str) -> str:
        """'ok', 'missing' (the server does not have it) or 'error'."""
        req = urllib.request.Request(f"{url}/buildid/{build_id}/debuginfo",
                                     headers={"User-Agent": "telegen-debuginfod"})
        tmp = ""
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                length = int(resp.headers.get("Content-Length") or 0)
                if length > self.max_size:
                    log.warning("debuginfod %s: %s is %d bytes, over the %d cap",
                                url, build_id, length, self.max_size)
                    return "error"
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
                size = 0
                with os.fdopen(fd, "wb") as out:
                    while chunk := resp.read(1 << 20):
                        size += len(chunk)
                        if size > self.max_size:
                            log.warning("debuginfod %s: %s exceeds the %d byte cap",
                                        url, build_id, self.max_size)
                            return "error"
                        out.write(chunk)
            got = _safe_build_id(tmp)
            if got != build_id:
                log.warning("debuginfod %s: file for %s has build-id %r; discarded",
                            url, build_id, got)
                return "error"
            os.replace(tmp, path)
            tmp = ""
            return "ok"
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return "missing"
            log.warning("debuginfod %s: HTTP %s for %s", url, exc.code, build_id)
            return "error"
        except (OSError, ValueError) as exc:   # URLError, timeouts, disk errors
            log.warning("debuginfod %s: %s for %s", url, exc, build_id)
            return "error"
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _safe_build_id(path: str) -> str:
    try:
        return read_build_id(path)
    except Exception:
        return ""

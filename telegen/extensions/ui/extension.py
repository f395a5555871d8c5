"""Extension ``ui``: serves the web view on loopback.

Data in: the extension owns a :class:`~telegen.extensions.ui.store.Catalog`;
the ``ui`` exporter (put it in any pipeline, ``extension: ui``) adds every
window to it, and the configured ``pprof_file`` directories are read on
demand. Other components may mount pages under a prefix with
:meth:`UiExtension.add_route` (the per-span view ``/spans/`` does), so a
tracing UI links to one port.

One server thread (``telegen-ui``) accepts and reads requests; a small pool
answers them (:mod:`telegen.helpers.httpserver`: Host allow-list against DNS
rebinding, timeouts, connection cap). The endpoint is loopback unless
``allow_remote`` (config validation; a warning at start).
"""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from telegen.component import CreateSettings, Host
from telegen.extensions.ui import pages
from telegen.extensions.ui.config import UiConfig
from telegen.extensions.ui.store import Catalog
from telegen.helpers.httphosts import is_loopback
from telegen.helpers.httpserver import BackgroundHTTPServer, reply
from telegen.untrusted import Refusals

# handler(path, query) -> (status, content type, body)
RouteHandler = Callable[[str, dict[str, str]], tuple[int, str, bytes]]


class UiExtension:
    def __init__(self, settings: CreateSettings, config: UiConfig) -> None:
        self._config = config
        self._log = settings.logger
        t = settings.telemetry
        self.refusals = Refusals(t, settings.logger)
        self.store = Catalog(max_windows=config.max_windows, directories=config.directories,
                             refusals=self.refusals)
        self._routes: dict[str, RouteHandler] = {}
        self._http: BackgroundHTTPServer | None = None
        self._requests = t.counter("ui_requests")
        self._errors = t.counter("ui_request_errors")
        self.address: tuple[str, int] = ("", 0)

    # -- lifecycle ---------------------------------------------------------------
    def start(self, host: Host) -> None:
        # binds here: a busy port fails start-up at once
        cfg = self._config
        self._http = BackgroundHTTPServer(cfg.endpoint, _handler_class(self), "telegen-ui",
                                          allowed_hosts=cfg.allowed_hosts,
                                          refusals=self.refusals, source="ui_http")
        self.address = self._http.address
        self._http.start()
        self._log.info("ui on http://%s:%d/", *self.address)
        if not is_loopback(self.address[0]):
            self._log.warning("ui: serving on %s (allow_remote): anyone who reaches it reads "
                              "every profile, command line and code path", cfg.endpoint)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    # -- routing -----------------------------------------------------------------
    def add_route(self, prefix: str, handler: RouteHandler) -> None:
        """Serve every path under ``prefix`` (e.g. ``/spans/``) with ``handler``."""
        self._routes[prefix] = handler

    def respond(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        self._requests.add(1)
        cfg = self._config
        try:
            for prefix, handler in self._routes.items():
                if path.startswith(prefix):
                    return handler(path, query)
            if path == "/":
                return pages.index(self.store, query)
            if path == "/flamegraph":
                return pages.flamegraph(self.store, query, min_fraction=cfg.min_fraction,
                                        span_url=cfg.span_url)
            if path == "/diff":
                return pages.diff(self.store, query, min_fraction=cfg.min_fraction)
            if path == "/top":
                return pages.top(self.store, query)
            if path == "/profile.pb.gz":
                return pages.profile_pprof(self.store, query)
            return 404, "text/plain", b"not found\n"
        except LookupError as exc:
            return 404, "text/plain; charset=utf-8", f"{exc}\n".encode()
        except (pages.BadRequest, KeyError, ValueError) as exc:
            return 400, "text/plain; charset=utf-8", f"{exc}\n".encode()
        except Exception as exc:     # never crash the agent over a page
            self._errors.add(1)
            self._log.exception("ui: %s failed", path)
            return 500, "text/plain; charset=utf-8", f"internal error: {exc}\n".encode()


def _handler_class(ext: UiExtension) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "telegen-ui"

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            status, ctype, body = ext.respond(parts.path, dict(parse_qsl(parts.query)))
            reply(self, status, ctype, body, {"Cache-Control": "no-store"})

        def log_message(self, format: str, *args: Any) -> None:
            pass
    return Handler

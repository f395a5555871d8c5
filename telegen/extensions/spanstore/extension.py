"""The ``spanstore`` extension: one per agent, reached through the Host by
the ``otlp`` receiver (which adds spans) and the ``spanlink`` processor
(which looks spans up and records the samples it linked)."""

from __future__ import annotations

from collections.abc import Iterable

from telegen.component import ComponentID, CreateSettings, Host
from telegen.extensions.spanstore.config import SpanStoreConfig
from telegen.extensions.spanstore.profiles import SpanProfiles
from telegen.extensions.spanstore.server import SpanViewServer, safe_respond
from telegen.extensions.spanstore.store import SpanIndex
from telegen.pdata import Profile, Sample
from telegen.ptrace import SpanRecord
from telegen.untrusted import Refusals


class SpanStore:
    def __init__(self, settings: CreateSettings, config: SpanStoreConfig) -> None:
        self._config = config
        self._id = str(settings.id)
        self._log = settings.logger
        self._telemetry = settings.telemetry
        self._spans_gauge = settings.telemetry.gauge("spanstore_spans")
        self.index = SpanIndex(retention_s=config.retention, max_spans=config.max_spans,
                               on_count=self._on_span_count)
        self.profiles = SpanProfiles(max_spans=config.max_profiled_spans,
                                     max_samples=config.max_samples_per_span,
                                     on_count=self.count)
        self._server: SpanViewServer | None = None
        self.port = 0

    def count(self, name: str, n: int) -> None:
        self._telemetry.counter(f"spanstore_{name}").add(n)

    def _on_span_count(self, name: str, n: int) -> None:
        self.count(f"{name}_spans" if name != "added" else "spans_added", n)

    # -- component ---------------------------------------------------------------
    def start(self, host: Host) -> None:
        if self._config.ui:
            self._mount_on_ui(host)
        elif self._config.endpoint:
            try:
                self._server = SpanViewServer(self, self._config.endpoint,
                                              f"extension-{self._id}-http",
                                              refusals=Refusals(self._telemetry, self._log))
            except OSError as exc:
                raise OSError(f"cannot listen on {self._config.endpoint}: {exc}") from None
            self.port = self._server.port
            self._server.start()
            self._log.info("%s: per-span view on http://127.0.0.1:%d/spans/<span_id>",
                           self._id, self.port)

    def _mount_on_ui(self, host: Host) -> None:
        from telegen.extensions.ui.extension import UiExtension

        target = ComponentID.parse(self._config.ui)
        ui = host.extension(target)
        if not isinstance(ui, UiExtension):
            raise RuntimeError(f"ui: extension {target} is not running: configure it under "
                               f"extensions: and list it in service::extensions")
        ui.add_route("/spans", lambda path, query: safe_respond(self, path, query)[:3])
        self._log.info("%s: per-span view on the %s extension under /spans/", self._id, target)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    # -- used by the otlp receiver and the spanlink processor -----------------------
    def add_spans(self, spans: Iterable[SpanRecord]) -> None:
        self.index.add(spans)
        self._spans_gauge.set(len(self.index))

    def record(self, profile: Profile, samples: Iterable[Sample]) -> None:
        self.profiles.record(profile, samples)


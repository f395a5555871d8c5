from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from telegen.extensions.ui.config import ui_extension_id


@dataclass
class SpanStoreConfig:
    # Spans are kept this long after they end (wall clock), so samples held by
    # spanlink (its delay) can still find them.
    retention: float = field(default=120.0, metadata={"duration": True})
    # Most spans kept; the oldest are dropped first (counted as
    # spanstore_evicted_spans).
    max_spans: int = 100000
    # Spans whose linked samples are kept for the per-span view (oldest
    # dropped first).
    max_profiled_spans: int = 2000
    # Distinct samples (stack + labels) kept per span and profile type.
    max_samples_per_span: int = 5000
    # Loopback HTTP for the per-span view: GET /spans/<span_id> (top table +
    # flame graph), /spans/<span_id>/profile (pprof), /spans/<span_id>/top,
    # /spans (recent linked spans, JSON). Empty: no server. Not used when
    # `ui` is set.
    endpoint: str = "127.0.0.1:4041"
    # The id of a `ui` extension (e.g. ui) to serve the per-span view on, under
    # /spans/ on its port, next to the flame graphs (its span links point
    # there); list that extension in service.extensions.
    ui: str = ""

    def validate(self) -> None:
        if self.ui:
            ui_extension_id(self.ui, "ui")
        if self.retention <= 0:
            raise ValueError(f"retention must be > 0 (got {self.retention}s)")
        for name in ("max_spans", "max_profiled_spans", "max_samples_per_span"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.endpoint:
            host, _, port = self.endpoint.rpartition(":")
            if not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"endpoint must be host:port (got {self.endpoint!r})")
            host = host.strip("[]")
            if host != "localhost":
                try:
                    loopback = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loopback = False
                if not loopback:
                    raise ValueError(f"endpoint must be a loopback address such as "
                                     f"127.0.0.1:4041 (got {self.endpoint!r}); the per-span "
                                     f"view has no authentication")

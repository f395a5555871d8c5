"""OTLP traces in, for the ``otlp`` receiver: keep the spans' linking facts in
the ``spanstore`` extension (``spanstore: <id>``) and hand the request, as the
bytes it came in, to the receiver's ``traces`` pipelines (forwarding).

Traces are served only when one of the two is configured; otherwise the
TraceService is not registered (gRPC UNIMPLEMENTED, HTTP 404), so a
misrouted SDK fails loudly instead of losing spans silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from telegen.component import ComponentID, ConfigError, Host
from telegen.formats.otlp import OtlpError
from telegen.formats.otlp_traces import extract_spans, parse_traces_request, span_count, trace_svc
from telegen.ptrace import Traces

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
TRACES_PATH = "/v1/traces"


class TracesIntake:
    def __init__(self, rid: str, spanstore: str, next_consumer: Any, telemetry: Any,
                 logger: logging.Logger, refuse: Callable[[str], None]) -> None:
        self._id = rid
        self._store_id = spanstore
        self._next = next_consumer
        self._forward = bool(getattr(next_consumer, "traces_enabled", False))
        self._log = logger
        self._refuse = refuse
        self._store: Any = None
        self._accepted = telemetry.counter("receiver_accepted_trace_requests")
        self._spans = telemetry.counter("receiver_accepted_spans")
        self._bad_spans = telemetry.counter("receiver_skipped_spans")

    @property
    def enabled(self) -> bool:
        return self._store is not None or self._forward

    def bind(self, host: Host | None) -> None:
        """Find the spanstore extension (fails start-up when it is missing)."""
        if not self._store_id:
            return
        cid = ComponentID.parse(self._store_id, f"receivers::{self._id}::spanstore")
        store = host.extension(cid) if host is not None else None
        if store is None or not hasattr(store, "add_spans"):
            raise ConfigError(f"receivers::{self._id}::spanstore",
                              f"extension \"{cid}\" is not running; configure it under "
                              f"extensions and list it in service::extensions")
        self._store = store

    def accept(self, data: bytes | None = None, request: Any = None) -> bytes:
        """Store and forward one request; returns the serialized response.
        Raises OtlpError when malformed. Downstream trouble is counted by the
        pipeline (forwarding queues per exporter), never returned to the SDK."""
        try:
            if request is None:
                request = parse_traces_request(data or b"")
                payload = data or b""
            else:
                payload = bytes(request.SerializeToString())
            spans, bad = extract_spans(request)
        except OtlpError as exc:
            self._refuse(str(exc))
            raise
        except Exception as exc:
            self._refuse(f"cannot decode traces: {exc}")
            raise OtlpError(f"cannot decode traces: {exc}") from None
        if self._store is not None and spans:
            try:
                self._store.add_spans(spans)
            except Exception as exc:   # never fail the SDK for our own index
                self._log.error("%s: span store failed: %s", self._id, exc)
        if self._forward:
            self._next.consume_traces(Traces(payload, span_count(request)))
        self._accepted.add(1)
        self._spans.add(len(spans))
        if bad:
            self._bad_spans.add(bad)
        return bytes(trace_svc.ExportTraceServiceResponse().SerializeToString())

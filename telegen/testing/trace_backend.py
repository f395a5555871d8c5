"""A real OTLP trace server on loopback for tests, built from the official
``opentelemetry-proto`` TraceService: records every request it receives (the
parsed message and its serialized bytes)."""

from __future__ import annotations

import threading
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import (  # type: ignore[import-untyped]
    trace_service_pb2 as trace_svc,
)
from opentelemetry.proto.collector.trace.v1 import (  # type: ignore[import-untyped]
    trace_service_pb2_grpc as trace_grpc,
)

from telegen.testing.backends import serve_grpc, stop_grpc


class TraceBackend(trace_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.port = 0
        self.received: list[Any] = []
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def start(self) -> TraceBackend:
        self._server, self.port = serve_grpc(
            lambda server: trace_grpc.add_TraceServiceServicer_to_server(self, server),
            0, "TraceBackend", workers=4)
        return self

    def stop(self) -> None:
        stop_grpc(self._server)
        self._server = None

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._lock:
            self.received.append(request)
        return trace_svc.ExportTraceServiceResponse()

    def requests(self) -> list[Any]:
        with self._lock:
            return list(self.received)


def span_request(spans: list[dict[str, Any]], pid: int, service: str = "tg-test") -> Any:
    """An ExportTraceServiceRequest as an SDK sends it: resource service.name +
    process.pid, spans with ``thread.id``. Each span dict: trace_id, span_id
    (hex), name, start_ns, end_ns, tid, optional parent_span_id."""
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    req = trace_svc.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name",
                               value=common_pb2.AnyValue(string_value=service))
    rs.resource.attributes.add(key="process.pid", value=common_pb2.AnyValue(int_value=pid))
    ss = rs.scope_spans.add()
    ss.scope.name = "telegen.tests"
    for s in spans:
        span = ss.spans.add(trace_id=bytes.fromhex(s["trace_id"]),
                            span_id=bytes.fromhex(s["span_id"]), name=s["name"],
                            kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
                            start_time_unix_nano=s["start_ns"], end_time_unix_nano=s["end_ns"])
        if s.get("parent_span_id"):
            span.parent_span_id = bytes.fromhex(s["parent_span_id"])
        span.attributes.add(key="thread.id", value=common_pb2.AnyValue(int_value=s["tid"]))
    return req

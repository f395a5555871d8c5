"""OTLP traces (``opentelemetry.proto.trace.v1``): parse export requests
(protobuf or OTLP/JSON) and extract the :class:`~telegen.ptrace.SpanRecord`
of each span. Nothing here re-encodes a request: forwarding keeps the bytes.

Conventions (OTel semantic conventions): ``process.pid`` is a resource
attribute, ``thread.id`` a span attribute (an int, or a decimal string).
Spans whose ids are not 16/8 bytes (or are all zero) are skipped and counted.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import (  # type: ignore[import-untyped]
    trace_service_pb2 as trace_svc,
)

from telegen.formats.otlp import OtlpError
from telegen.ptrace import SpanRecord

__all__ = ["PID", "TID", "trace_svc", "parse_traces_request", "traces_from_json",
           "extract_spans", "span_count"]

PID = "process.pid"
TID = "thread.id"
_ZERO_TRACE, _ZERO_SPAN = b"\0" * 16, b"\0" * 8


def parse_traces_request(data: bytes) -> Any:
    """An ``ExportTraceServiceRequest`` from protobuf bytes; OtlpError if malformed."""
    req = trace_svc.ExportTraceServiceRequest()
    try:
        req.ParseFromString(data)
    except (DecodeError, ValueError) as exc:
        raise OtlpError(f"not an OTLP traces request: {exc}") from None
    return req


def _hex_to_b64(obj: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                pass   # already base64 (protobuf JSON): leave it


def traces_from_json(doc: Any) -> Any:
    """OTLP/JSON (ids in hex, as the spec says) to a request; OtlpError if malformed."""
    if not isinstance(doc, dict):
        raise OtlpError("the JSON body must be an object")
    for rs in doc.get("resourceSpans") or []:
        for ss in (rs or {}).get("scopeSpans") or []:
            for span in (ss or {}).get("spans") or []:
                if isinstance(span, dict):
                    _hex_to_b64(span, ("traceId", "spanId", "parentSpanId"))
                    for link in span.get("links") or []:
                        if isinstance(link, dict):
                            _hex_to_b64(link, ("traceId", "spanId"))
    try:
        return json_format.ParseDict(doc, trace_svc.ExportTraceServiceRequest())
    except json_format.ParseError as exc:
        raise OtlpError(f"malformed OTLP/JSON traces: {exc}") from None


def _int_attr(attributes: Iterable[Any], key: str) -> int | None:
    for kv in attributes:
        if kv.key != key:
            continue
        v = kv.value
        which = v.WhichOneof("value")
        if which == "int_value":
            return int(v.int_value)
        if which == "string_value" and v.string_value.strip().isdigit():
            return int(v.string_value)
        return None
    return None


def extract_spans(req: Any) -> tuple[list[SpanRecord], int]:
    """(the spans, how many were skipped for bad ids or times)."""
    out: list[SpanRecord] = []
    bad = 0
    for rs in req.resource_spans:
        pid = _int_attr(rs.resource.attributes, PID)
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid_ = bytes(span.trace_id)
                sid = bytes(span.span_id)
                if len(tid_) != 16 or len(sid) != 8 or tid_ == _ZERO_TRACE or sid == _ZERO_SPAN \
                        or span.end_time_unix_nano < span.start_time_unix_nano:
                    bad += 1
                    continue
                parent = bytes(span.parent_span_id)
                out.append(SpanRecord(
                    trace_id=tid_.hex(), span_id=sid.hex(),
                    parent_span_id=parent.hex() if len(parent) == 8 else "",
                    name=span.name, start_ns=int(span.start_time_unix_nano),
                    end_ns=int(span.end_time_unix_nano), pid=pid,
                    tid=_int_attr(span.attributes, TID)))
    return out, bad


def span_count(req: Any) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)

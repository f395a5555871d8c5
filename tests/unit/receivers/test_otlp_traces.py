"""OTLP traces through the otlp receiver: spans into the spanstore, requests
forwarded unchanged by a traces pipeline to a real TraceService, config rules,
malformed input refused, and no traces service when nothing takes them."""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from telegen.component import ComponentID, ConfigError
from telegen.config import load_text
from telegen.service import Service
from telegen.testing.agent import free_port, wait_until
from telegen.testing.trace_backend import TraceBackend, span_request

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _spans(n: int, tid: int = 5) -> list[dict[str, Any]]:
    now = time.time_ns()
    trace = secrets.token_hex(16)
    return [{"trace_id": trace, "span_id": secrets.token_hex(8), "name": f"op{i}",
             "start_ns": now + i * 1000, "end_ns": now + i * 1000 + 500, "tid": tid}
            for i in range(n)]


def _yaml(grpc_port: int, http_port: int, backend: int, view: int, forward: bool) -> str:
    traces = """
    traces:
      receivers: [otlp]
      exporters: [otlp/traces]""" if forward else ""
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
    spanstore: spanstore
  pprof: {{paths: ["/nonexistent/*.pb.gz"]}}
exporters:
  otlp/traces:
    endpoint: 127.0.0.1:{backend}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 1s}}
  console: {{}}
extensions:
  spanstore: {{endpoint: "127.0.0.1:{view}"}}
service:
  extensions: [spanstore]
  pipelines:
    profiles:
      receivers: [pprof]
      exporters: [console]{traces}
"""


@pytest.fixture
def agent() -> Iterator[tuple[Service, TraceBackend, dict[str, int]]]:
    backend = TraceBackend().start()
    ports = {"grpc": free_port(), "http": free_port(), "view": free_port()}
    service = Service(load_text(_yaml(ports["grpc"], ports["http"], backend.port,
                                      ports["view"], True), "test"))
    service.start()
    yield service, backend, ports
    service.shutdown(5)
    backend.stop()


def _post(port: int, body: bytes, ctype: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body,
                                 headers={"Content-Type": ctype})
    try:
        return int(urllib.request.urlopen(req, timeout=5).status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_spans_are_stored_and_forwarded_unchanged(agent: Any) -> None:
    service, backend, ports = agent
    store = service.extension(ComponentID("spanstore"))
    grpc_req = span_request(_spans(3), pid=4242)
    http_req = span_request(_spans(2, tid=6), pid=4242)
    json_req = span_request(_spans(1, tid=7), pid=4243)
    with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
        export = channel.unary_unary(TRACE_EXPORT, request_serializer=None,
                                     response_deserializer=None)
        export(grpc_req.SerializeToString(), timeout=5)
        with pytest.raises(grpc.RpcError) as bad:
            export(b"\xff\xff\xff", timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _post(ports["http"], http_req.SerializeToString(), "application/x-protobuf") == 200
    doc = json_format.MessageToDict(json_req)
    for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        s["traceId"] = base64.b64decode(s["traceId"]).hex()     # OTLP/JSON ids are hex
        s["spanId"] = base64.b64decode(s["spanId"]).hex()
    assert _post(ports["http"], json.dumps(doc).encode(), "application/json") == 200
    assert _post(ports["http"], b"{not json", "application/json") == 400

    assert wait_until(lambda: len(backend.requests()) == 3, 10)
    assert sorted(r.SerializeToString() for r in backend.requests()) == sorted(
        r.SerializeToString() for r in (grpc_req, http_req, json_req))
    for req, pid in ((grpc_req, 4242), (http_req, 4242), (json_req, 4243)):
        for span in req.resource_spans[0].scope_spans[0].spans:
            rec = store.index.get(span.span_id.hex())
            assert rec is not None and rec.pid == pid and rec.trace_id == span.trace_id.hex()
            tid = span.attributes[0].value.int_value
            assert rec.tid == tid
            assert store.index.find(pid, tid, span.start_time_unix_nano) is rec

    view = f"http://127.0.0.1:{ports['view']}"
    assert json.loads(urllib.request.urlopen(f"{view}/spans", timeout=5).read()) == []
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{view}/spans/{'0' * 15}1", timeout=5)
    assert missing.value.code == 404


def test_without_spanstore_or_traces_pipeline_no_trace_service() -> None:
    ports = {"grpc": free_port(), "http": free_port()}
    text = _yaml(ports["grpc"], ports["http"], free_port(), free_port(), False)
    text = text.replace("    spanstore: spanstore\n", "").replace(
        "  pprof: {", "  pprof/x: {").replace("[pprof]", "[pprof/x, otlp]")
    service = Service(load_text(text, "test"))
    service.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            export = channel.unary_unary(TRACE_EXPORT, request_serializer=None,
                                         response_deserializer=None)
            with pytest.raises(grpc.RpcError) as err:
                export(span_request(_spans(1), 1).SerializeToString(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert _post(ports["http"], b"", "application/x-protobuf") == 404
    finally:
        service.shutdown(5)


@pytest.mark.parametrize("pipeline, message", [
    ("traces: {receivers: [pprof], exporters: [otlp/traces]}",
     'receiver "pprof" does not handle traces; receivers for traces pipelines: otlp'),
    ("traces: {receivers: [otlp], exporters: [console]}",
     'exporter "console" does not handle traces'),
    ("traces: {receivers: [otlp], processors: [batch], exporters: [otlp/traces]}",
     'processor "batch" does not handle traces; processors for traces pipelines: none'),
])
def test_traces_pipelines_take_only_components_that_handle_traces(pipeline: str,
                                                                  message: str) -> None:
    text = _yaml(1, 2, 3, 4, False).replace("    profiles:", f"    {pipeline}\n    profiles:")
    text = text.replace("exporters:\n", "processors:\n  batch: {}\nexporters:\n", 1)
    with pytest.raises(ConfigError) as err:
        load_text(text, "test")
    assert message in str(err.value)


def test_spanstore_endpoint_must_be_loopback() -> None:
    text = _yaml(1, 2, 3, 4, True).replace('endpoint: "127.0.0.1:4"', 'endpoint: "0.0.0.0:4"')
    with pytest.raises(ConfigError) as err:
        load_text(text, "test")
    assert "extensions::spanstore" in str(err.value) and "loopback" in str(err.value)

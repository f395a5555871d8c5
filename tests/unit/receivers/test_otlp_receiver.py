"""Receiver otlp: gRPC and HTTP in, malformed input refused and counted."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format

from telegen.component import ConfigError, Kind
from telegen.config import build_component_config
from telegen.exporters.otlp.exporter import EXPORT_METHOD
from telegen.formats.otlp import encode_request, svc
from telegen.helpers.exporterhelper.rpcstatus import Status
from telegen.receivers.otlp.factory import FACTORY
from telegen.receivers.otlp.receiver import OtlpReceiver
from telegen.telemetry import Registry
from telegen.testing.pprof_checks import profile_state, synthetic_profiles
from telegen.testing.settings import counter, create_settings
from telegen.testing.sink import Sink


@pytest.fixture
def running() -> Iterator[tuple[OtlpReceiver, Sink, Registry]]:
    reg, sink = Registry(), Sink()
    cfg = build_component_config(FACTORY, {"protocols": {
        "grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}},
        "receivers::otlp")
    rcv = FACTORY.create(create_settings(Kind.RECEIVER, "otlp", reg), cfg, sink)
    rcv.start(None)
    yield rcv, sink, reg
    rcv.shutdown(2)


def _grpc_call(port: int, payload: bytes) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(EXPORT_METHOD, request_serializer=None,
                              response_deserializer=None)
        return bytes(call(payload, timeout=5))


def _post(port: int, body: bytes, ctype: str, encoding: str = "") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1development/profiles",
                                 data=body, method="POST", headers={"Content-Type": ctype})
    if encoding:
        req.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_grpc_export_is_decoded_into_pdata(running: tuple[OtlpReceiver, Sink, Registry]) -> None:
    rcv, sink, reg = running
    profiles = synthetic_profiles()
    reply = _grpc_call(rcv.grpc_port, encode_request(profiles).SerializeToString())
    svc.ExportProfilesServiceResponse.FromString(reply)
    assert sink.wait_for(1, 5)
    got = sink.profiles()
    assert [profile_state(p) for p in got] == [profile_state(p) for p in profiles]
    assert counter(reg, "receiver_accepted_requests") == 1


def test_malformed_grpc_gets_invalid_argument_and_server_keeps_serving(
        running: tuple[OtlpReceiver, Sink, Registry]) -> None:
    rcv, sink, reg = running
    bad = encode_request(synthetic_profiles()[:1])
    bad.dictionary.stack_table[1].location_indices.append(12345)
    for payload in (b"\xff\xfe garbage \x00\x01", bad.SerializeToString()):
        with pytest.raises(grpc.RpcError) as info:
            _grpc_call(rcv.grpc_port, payload)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert counter(reg, "receiver_refused_requests") == 2
    _grpc_call(rcv.grpc_port, encode_request(synthetic_profiles()).SerializeToString())
    assert sink.wait_for(1, 5) and len(sink.profiles()) == 4


def test_http_protobuf_gzip_and_json(running: tuple[OtlpReceiver, Sink, Registry]) -> None:
    rcv, sink, reg = running
    req = encode_request(synthetic_profiles()[:1])
    status, body = _post(rcv.http_port, gzip.compress(req.SerializeToString()),
                         "application/x-protobuf", "gzip")
    assert status == 200
    svc.ExportProfilesServiceResponse.FromString(body)
    doc = json_format.MessageToDict(req)
    for link in doc["dictionary"].get("linkTable", []):     # OTLP/JSON ids are hex
        for k in ("traceId", "spanId"):
            if k in link:
                link[k] = base64.b64decode(link[k]).hex()
    status, body = _post(rcv.http_port, json.dumps(doc).encode(), "application/json")
    assert status == 200, body
    assert sink.wait_for(2, 5)
    first, second = sink.profiles()
    assert profile_state(first) == profile_state(second)
    assert second.samples and any(s.link for s in second)


@pytest.mark.parametrize("body, ctype, code", [
    (b"\xff\xfe\xfd", "application/x-protobuf", 400),
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b"abc", "text/plain", 415),
])
def test_http_malformed_is_refused_and_counted(running: tuple[OtlpReceiver, Sink, Registry],
                                               body: bytes, ctype: str, code: int) -> None:
    rcv, sink, reg = running
    status, reply = _post(rcv.http_port, body, ctype)
    assert status == code
    if ctype == "application/x-protobuf":
        assert Status.FromString(reply).code == 3
    assert counter(reg, "receiver_refused_requests") == 1
    ok, _ = _post(rcv.http_port, encode_request(synthetic_profiles()[:1]).SerializeToString(),
                  "application/x-protobuf")
    assert ok == 200


def test_config_defaults_and_errors() -> None:
    cfg = build_component_config(FACTORY, None, "receivers::otlp")
    assert (cfg.grpc_endpoint(), cfg.http_endpoint()) == ("127.0.0.1:4317", "127.0.0.1:4318")
    only = build_component_config(FACTORY, {"protocols": {"grpc": None}}, "receivers::otlp")
    assert (only.grpc_endpoint(), only.http_endpoint()) == ("127.0.0.1:4317", None)
    with pytest.raises(ConfigError, match="receivers::otlp::protocols: unknown key \"grcp\""):
        build_component_config(FACTORY, {"protocols": {"grcp": {}}}, "receivers::otlp")
    with pytest.raises(ConfigError, match="endpoint: invalid value"):
        build_component_config(FACTORY, {"protocols": {"http": {"endpoint": "nope"}}},
                               "receivers::otlp")


def test_config_bounds() -> None:
    cfg = build_component_config(FACTORY, None, "receivers::otlp")
    assert (cfg.http_max_body(), cfg.grpc_max_recv_bytes(), cfg.grpc_max_streams()) == (
        20 << 20, 16 << 20, 16)
    assert cfg.http_allowed_hosts() == []
    set_ = build_component_config(FACTORY, {"protocols": {
        "grpc": {"max_recv_msg_size_mib": 2, "max_concurrent_streams": 3},
        "http": {"max_request_body_size": 4096, "allowed_hosts": ["agent.local"]}}},
        "receivers::otlp")
    assert (set_.http_max_body(), set_.grpc_max_recv_bytes(), set_.grpc_max_streams()) == (
        4096, 2 << 20, 3)
    assert set_.http_allowed_hosts() == ["agent.local"]
    with pytest.raises(ConfigError, match="max_request_body_size"):
        build_component_config(FACTORY, {"protocols": {"http": {"max_request_body_size": 10}}},
                               "receivers::otlp")


def test_http_body_over_the_cap_is_refused_as_sent_and_inflated() -> None:
    reg, sink = Registry(), Sink()
    cfg = build_component_config(FACTORY, {"protocols": {"http": {
        "endpoint": "127.0.0.1:0", "max_request_body_size": 64 << 10}}}, "receivers::otlp")
    rcv = FACTORY.create(create_settings(Kind.RECEIVER, "otlp", reg), cfg, sink)
    rcv.start(None)
    try:
        port = rcv.http_port
        assert _post(port, bytes(100 << 10), "application/x-protobuf")[0] == 413
        assert _post(port, gzip.compress(bytes(100 << 10)), "application/x-protobuf",
                     "gzip")[0] == 413
        assert _post(port, b"x", "application/x-protobuf", "br")[0] == 415
        req = encode_request(synthetic_profiles()).SerializeToString()
        assert _post(port, gzip.compress(req), "application/x-protobuf", "gzip")[0] == 200
        snap = reg.snapshot()
        assert [snap[f'refused_inputs{{component="otlp",kind="receiver",reason="{r}",'
                     f'source="otlp_http"}}'] for r in
                ("too_large", "decompressed_too_large", "content_encoding")] == [1, 1, 1]
    finally:
        rcv.shutdown(2)

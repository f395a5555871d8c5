"""Receiver ``otlp``: accept OTLP profiles pushed over gRPC and/or HTTP."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_GRPC = "127.0.0.1:4317"
DEFAULT_HTTP = "127.0.0.1:4318"
# Collector's confighttp default; since CVE-2024-36129 it bounds the inflated
# body too. 20 MiB also keeps one gzip bomb under the agent's 50 MB budget.
DEFAULT_MAX_REQUEST_BODY = 20 << 20
DEFAULT_MAX_RECV_MIB = 16           # gRPC: a message after decompression
DEFAULT_MAX_STREAMS = 16            # gRPC: RPCs in progress (4 run, the rest wait)
MiB = 1 << 20


def _default_protocols() -> dict[str, Any]:
    return {"grpc": {}, "http": {}}


@dataclass
class OtlpReceiverConfig:
    # Servers to run, Collector style; list only the ones you want, e.g.
    # {grpc: {endpoint: 0.0.0.0:4317}}. grpc: endpoint (127.0.0.1:4317),
    # max_recv_msg_size_mib (16, the message after decompression),
    # max_concurrent_streams (16 RPCs at once; more get RESOURCE_EXHAUSTED).
    # http: endpoint (127.0.0.1:4318), serving POST /v1development/profiles
    # (protobuf or JSON); max_request_body_size (bytes, 20 MiB: the body as
    # sent and after gzip; larger gets 413); allowed_hosts (names besides
    # loopback, the endpoint's host and, off loopback, IP literals and this
    # host's names, that clients may send as Host:; others get 421).
    protocols: dict[str, Any] = field(default_factory=_default_protocols)
    # An extension id (e.g. spanstore): OTLP traces (gRPC TraceService, HTTP
    # POST /v1/traces) are accepted and their spans kept there for the
    # spanlink processor. Traces are also accepted when the receiver is in a
    # traces pipeline, which forwards them unchanged to its exporters.
    spanstore: str = ""

    def validate(self) -> None:
        if not self.protocols:
            raise ValueError("protocols: enable at least one of grpc and http")
        for name in ("grpc", "http"):
            if name in self.protocols and self.protocols[name] is None:
                self.protocols[name] = {}
        if self.http_max_body() < 1024:
            raise ValueError(f"protocols::http::max_request_body_size must be at least 1024 "
                             f"(got {self.http_max_body()})")
        if self.grpc_max_streams() < 1:
            raise ValueError("protocols::grpc::max_concurrent_streams must be at least 1")

    def grpc_endpoint(self) -> str | None:
        g = self.protocols.get("grpc")
        return None if g is None else str(g.get("endpoint") or DEFAULT_GRPC)

    def grpc_max_recv_bytes(self) -> int:
        g = self.protocols.get("grpc") or {}
        return int(g.get("max_recv_msg_size_mib") or DEFAULT_MAX_RECV_MIB) * MiB

    def grpc_max_streams(self) -> int:
        g = self.protocols.get("grpc") or {}
        return int(g.get("max_concurrent_streams") or DEFAULT_MAX_STREAMS)

    def http_endpoint(self) -> str | None:
        h = self.protocols.get("http")
        return None if h is None else str(h.get("endpoint") or DEFAULT_HTTP)

    def http_max_body(self) -> int:
        h = self.protocols.get("http") or {}
        return int(h.get("max_request_body_size") or DEFAULT_MAX_REQUEST_BODY)

    def http_allowed_hosts(self) -> list[str]:
        h = self.protocols.get("http") or {}
        return [str(n) for n in h.get("allowed_hosts") or []]

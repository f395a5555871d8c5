"""Receiver ``otlp``: accept OTLP profiles pushed over gRPC and/or HTTP."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_GRPC = "127.0.0.1:4317"
DEFAULT_HTTP = "127.0.0.1:4318"


def _default_protocols() -> dict[str, Any]:
    return {"grpc": {}, "http": {}}


@dataclass
class OtlpReceiverConfig:
    # Servers to run, Collector style; list only the ones you want, e.g.
    # {grpc: {endpoint: 0.0.0.0:4317}}. grpc: endpoint (127.0.0.1:4317),
    # max_recv_msg_size_mib (16). http: endpoint (127.0.0.1:4318), serving
    # POST /v1development/profiles (protobuf or JSON).
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

    def grpc_endpoint(self) -> str | None:
        g = self.protocols.get("grpc")
        return None if g is None else str(g.get("endpoint") or DEFAULT_GRPC)

    def grpc_max_recv_bytes(self) -> int:
        g = self.protocols.get("grpc") or {}
        return int(g.get("max_recv_msg_size_mib") or 16) * 1024 * 1024

    def http_endpoint(self) -> str | None:
        h = self.protocols.get("http")
        return None if h is None else str(h.get("endpoint") or DEFAULT_HTTP)

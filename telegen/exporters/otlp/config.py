"""Exporter ``otlp`` (alias ``otlp_grpc``): OTLP profiles over gRPC."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from telegen.helpers.exporterhelper import QueueConfig, RetryConfig, TLSConfig
from telegen.helpers.exporterhelper.config import refuse_plaintext_credentials

_ENDPOINT = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<target>[^/\s]+:\d{1,5})/?$")


@dataclass
class OtlpExporterConfig:
    # host:port of the OTLP gRPC server (an OpenTelemetry Collector, Pyroscope,
    # ...). ``http://`` in front means plain text, ``https://`` TLS.
    endpoint: str = ""
    # insecure (plain text), ca_file, cert_file + key_file (mutual TLS).
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Sent with every request (e.g. authorization); names are lower-cased.
    headers: dict[str, str] = field(default_factory=dict)
    compression: str = "gzip"            # gzip | none
    # Deadline of one export call.
    timeout: float = field(default=5.0, metadata={"duration": True})
    # service.name of every resource (default: the process's OTEL_SERVICE_NAME /
    # OTEL_RESOURCE_ATTRIBUTES, else its Kubernetes container name, else its
    # executable name, else unknown_service).
    service_name: str = ""
    # Collector exporterhelper settings: {enabled, queue_size, num_consumers,
    # storage (a directory: the queue survives restarts and crashes)}.
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    # {enabled, initial_interval, max_interval, max_elapsed_time, multiplier,
    # randomization_factor}; gRPC codes classed as the Collector does.
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> None:
        if not self.endpoint:
            raise ValueError("endpoint is required, e.g. endpoint: otel-collector:4317")
        if not _ENDPOINT.match(self.endpoint):
            raise ValueError(f"endpoint must be host:port, optionally after http:// or "
                             f"https:// (got {self.endpoint!r})")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 (got {self.timeout}s)")
        target, secure = self.target()
        if not secure:
            secrets = [f"headers::{k}" for k in self.headers
                       if k.lower() in ("authorization", "proxy-authorization", "cookie")]
            refuse_plaintext_credentials(target.rsplit(":", 1)[0], secrets,
                                         "plain-text gRPC (http:// or tls::insecure)")
        self.tls.validate()
        self.sending_queue.validate()
        self.retry_on_failure.validate()

    def target(self) -> tuple[str, bool]:
        """(host:port, use TLS)."""
        m = _ENDPOINT.match(self.endpoint)
        assert m is not None
        scheme = m.group("scheme")
        secure = scheme == "https" or (scheme is None and not self.tls.insecure)
        return m.group("target"), secure

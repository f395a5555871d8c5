"""Exporter ``http``: pprof over HTTP, to Pyroscope ``/ingest`` or any URL."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from telegen.helpers.exporterhelper import QueueConfig, RetryConfig, TLSConfig

MODES = ("pyroscope", "generic")


@dataclass
class BasicAuth:
    username: str = ""
    password: str = ""


@dataclass
class HttpExporterConfig:
    # pyroscope: the server's base URL (http://pyroscope:4040), /ingest is added.
    # generic: the URL each gzipped pprof file is POSTed to.
    endpoint: str = ""
    # pyroscope (POST /ingest, multipart pprof) or generic (POST the gzipped pprof).
    mode: str = "pyroscope"
    # For https:// endpoints: ca_file, cert_file + key_file (mutual TLS);
    # insecure: true skips certificate verification.
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Sent with every request.
    headers: dict[str, str] = field(default_factory=dict)
    # Pyroscope / Grafana Cloud tenant: sent as X-Scope-OrgID.
    tenant_id: str = ""
    # HTTP basic auth {username, password}, or a bearer token; not both.
    basic_auth: BasicAuth = field(default_factory=BasicAuth)
    # Sent as ``Authorization: Bearer <token>`` (use ${env:VAR}; never written to the disk queue).
    bearer_token: str = ""
    # Deadline of one request.
    timeout: float = field(default=10.0, metadata={"duration": True})
    # Application name in Pyroscope (default: the process's service.name, else
    # unknown_service:<executable>).
    service_name: str = ""
    # Extra series labels for Pyroscope.
    labels: dict[str, str] = field(default_factory=dict)
    # Pyroscope's spyName parameter.
    spy_name: str = "telegen"
    # Collector exporterhelper settings: {enabled, queue_size, num_consumers,
    # storage (a directory: the queue survives restarts)}.
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    # {enabled, initial_interval, max_interval, max_elapsed_time, multiplier,
    # randomization_factor}; 429 and 5xx retry (honouring Retry-After).
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> None:
        if not self.endpoint:
            raise ValueError("endpoint is required, e.g. endpoint: http://pyroscope:4040")
        if not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise ValueError(f"endpoint must be an http:// or https:// URL "
                             f"(got {self.endpoint!r})")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.bearer_token and self.basic_auth.username:
            raise ValueError("set basic_auth or bearer_token, not both")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 (got {self.timeout}s)")
        self.tls.validate()
        self.sending_queue.validate()
        self.retry_on_failure.validate()

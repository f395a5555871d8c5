"""Exporter ``http``: pprof over HTTP, to Pyroscope ``/ingest`` or any URL."""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from telegen.helpers.exporterhelper import QueueConfig, RetryConfig, TLSConfig
from telegen.helpers.exporterhelper.config import refuse_plaintext_credentials

# Resource attributes that become Pyroscope series labels unless
# resource_to_labels says otherwise: bounded per host, never a pid or a
# command line.
DEFAULT_RESOURCE_LABELS = (
    "host.name", "service.namespace", "service.version", "deployment.environment.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name",
    "process.executable.name",
)

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
    # pyroscope (POST /ingest: multipart pprof + sample_type_config, as
    # Pyroscope's Go client) or generic (POST the gzipped pprof).
    mode: str = "pyroscope"
    # For https:// endpoints: ca_file, cert_file + key_file (mutual TLS);
    # insecure: true skips certificate verification.
    tls: TLSConfig = field(default_factory=TLSConfig)
    # Sent with every request.
    headers: dict[str, str] = field(default_factory=dict)
    # Pyroscope / Grafana Cloud tenant: sent as X-Scope-OrgID.
    tenant_id: str = ""
    # HTTP basic auth {username, password}, or a bearer token; not both.
    # Credentials over plain http:// are refused unless the host is loopback.
    basic_auth: BasicAuth = field(default_factory=BasicAuth)
    # Sent as ``Authorization: Bearer <token>`` (use ${env:VAR}; never written to the disk queue).
    bearer_token: str = ""
    # Deadline of one request.
    timeout: float = field(default=10.0, metadata={"duration": True})
    # Service name in Pyroscope, letters, digits and _ . - / only (default: each
    # process's service.name, else its Kubernetes container name, else its
    # executable name, with any other character made _).
    service_name: str = ""
    # Extra series labels for Pyroscope (names [A-Za-z_][A-Za-z0-9_]*).
    labels: dict[str, str] = field(default_factory=dict)
    # Resource attributes that become series labels (dots made _). The default
    # set is bounded per host: never process.pid or a command line, which would
    # make series unbounded. Pyroscope allows 30 label names per series; four
    # are its own, so at most 26 come from labels + these.
    resource_to_labels: list[str] = field(
        default_factory=lambda: list(DEFAULT_RESOURCE_LABELS))
    # Pyroscope's spyName parameter.
    spy_name: str = "telegen"
    # Collector exporterhelper settings: {enabled, queue_size, num_consumers,
    # storage (a directory: the queue survives restarts)}.
    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    # {enabled, initial_interval, max_interval, max_elapsed_time, multiplier,
    # randomization_factor}; 429 and 5xx retry (honouring Retry-After); in
    # pyroscope mode also 408 and a 422 whose message names a transient push
    # failure. Redirects are never followed (a 3xx is permanent).
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def credentials(self) -> list[str]:
        """The settings that carry a secret (for the clear-text check)."""
        found = ["basic_auth"] if self.basic_auth.username or self.basic_auth.password else []
        found += ["bearer_token"] if self.bearer_token else []
        found += [f"headers::{k}" for k in self.headers
                  if k.lower() in ("authorization", "proxy-authorization", "cookie")]
        return found

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
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme == "http":
            refuse_plaintext_credentials(url.hostname or "", self.credentials(), "plain http://")
        if self.mode == "pyroscope":
            self._validate_pyroscope()
        self.tls.validate()
        self.sending_queue.validate()
        self.retry_on_failure.validate()

    def _validate_pyroscope(self) -> None:
        from telegen.exporters.http import pyroscope

        if self.service_name:
            pyroscope.check_service_name(self.service_name)
        for key, value in self.labels.items():
            pyroscope.check_label(key, value)
        if len(self.labels) > pyroscope.MAX_OWN_LABELS:
            raise ValueError(f"labels: {len(self.labels)} names; Pyroscope allows "
                             f"{pyroscope.MAX_OWN_LABELS} besides its own")

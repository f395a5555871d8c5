"""Settings every queued exporter shares, with the Collector's key names.

An exporter config embeds them as nested dataclasses::

    sending_queue: QueueConfig = field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

and its JSON schema refers to ``helpers/exporterhelper.json#/$defs/...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QueueConfig:
    # Queue requests and send them from background threads; off: send in the
    # caller's thread (a slow backend then delays the pipeline).
    enabled: bool = True
    # Most requests waiting (a request is one export call: one window).
    queue_size: int = 1000
    # Threads sending in parallel.
    num_consumers: int = 2
    # A directory: keep the queue there, one file per request, so it survives
    # restarts and crashes. Empty: in memory.
    storage: str = ""

    def validate(self, path: str = "sending_queue") -> None:
        if self.queue_size < 1:
            raise ValueError(f"{path}::queue_size must be >= 1 (got {self.queue_size})")
        if self.num_consumers < 1:
            raise ValueError(f"{path}::num_consumers must be >= 1 (got {self.num_consumers})")


@dataclass
class RetryConfig:
    enabled: bool = True
    # First wait after a failure; each next wait is multiplier times longer,
    # capped at max_interval, and jittered by +-randomization_factor.
    initial_interval: float = field(default=5.0, metadata={"duration": True})
    max_interval: float = field(default=30.0, metadata={"duration": True})
    # Give up on a request after this long (0: never).
    max_elapsed_time: float = field(default=300.0, metadata={"duration": True})
    multiplier: float = 1.5
    randomization_factor: float = 0.5

    def validate(self, path: str = "retry_on_failure") -> None:
        if self.initial_interval <= 0:
            raise ValueError(f"{path}::initial_interval must be > 0 "
                             f"(got {self.initial_interval}s)")
        if self.max_interval < self.initial_interval:
            raise ValueError(f"{path}::max_interval ({self.max_interval}s) must be >= "
                             f"initial_interval ({self.initial_interval}s)")
        if self.multiplier < 1:
            raise ValueError(f"{path}::multiplier must be >= 1 (got {self.multiplier})")
        if not 0 <= self.randomization_factor < 1:
            raise ValueError(f"{path}::randomization_factor must be in [0, 1) "
                             f"(got {self.randomization_factor})")


@dataclass
class TLSConfig:
    # Plain text (no TLS). For gRPC an ``http://`` endpoint implies it.
    insecure: bool = False
    # PEM files: the CA to trust (default: the system's), and a client
    # certificate + key for mutual TLS.
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def validate(self, path: str = "tls") -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError(f"{path}: cert_file and key_file go together; set both or neither")

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, key, cert) file contents; raises OSError naming a missing file."""
        def load(name: str) -> bytes | None:
            if not name:
                return None
            with open(name, "rb") as f:
                return f.read()
        return load(self.ca_file), load(self.key_file), load(self.cert_file)


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and literal loopback addresses (127.0.0.0/8,
    ``::1``, bracketed or not). Names are not resolved: a name that merely
    resolves to loopback today counts as remote."""
    import ipaddress

    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_plaintext_credentials(host: str, credentials: list[str], what: str) -> None:
    """Credentials never travel in clear text off the host: ``credentials``
    names the settings that carry some (empty: nothing to protect)."""
    if credentials and not is_loopback_host(host):
        raise ValueError(
            f"{' and '.join(credentials)} would be sent in clear text to {host} over {what}; "
            f"use https:// (TLS) for a remote endpoint, or a loopback address")

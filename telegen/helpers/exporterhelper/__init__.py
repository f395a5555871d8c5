"""Shared exporter machinery with OpenTelemetry Collector semantics and key
names: ``sending_queue`` (memory or on-disk ``storage``), ``retry_on_failure``
(jittered exponential backoff, server-given delays), gRPC / HTTP error
classification, and the ``exporter_*`` counters.

To adopt it, an exporter subclasses :class:`QueuedExporter`, turns a batch of
profiles into :class:`Request` objects (``requests``) and sends one
(``send``), raising :class:`RetryableError` or ``PermanentError``; its config
embeds :class:`QueueConfig` / :class:`RetryConfig` and its schema refers to
``helpers/exporterhelper.json#/$defs/sending_queue`` (and ``retry_on_failure``).
"""

from __future__ import annotations

from collections.abc import Iterable

from telegen.component import CreateSettings, Host
from telegen.helpers.exporterhelper.config import QueueConfig, RetryConfig, TLSConfig
from telegen.helpers.exporterhelper.queue import MemoryQueue, PersistentQueue, Request
from telegen.helpers.exporterhelper.retry import (
    Backoff,
    RetryableError,
    grpc_error,
    http_error,
    parse_retry_after,
)
from telegen.helpers.exporterhelper.sender import QueuedSender, QueueFullError
from telegen.pdata import Profiles

__all__ = [
    "Backoff", "MemoryQueue", "PersistentQueue", "QueueConfig", "QueueFullError",
    "QueuedExporter", "QueuedSender", "Request", "RetryConfig", "RetryableError", "TLSConfig",
    "grpc_error", "http_error", "parse_retry_after",
]


class QueuedExporter:
    """Base for exporters that send over the network through the helper."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, queue: QueueConfig, retry: RetryConfig) -> None:
        self.settings = settings
        self.log = settings.logger
        self.sender = QueuedSender(settings, queue, retry, self.send)

    # -- to implement ------------------------------------------------------------
    def requests(self, profiles: Profiles) -> Iterable[Request]:
        raise NotImplementedError

    def send(self, request: Request) -> None:
        raise NotImplementedError

    def open(self) -> None:
        """Set up clients (called by ``start`` before the senders run)."""

    def close(self) -> None:
        """Release clients (called by ``shutdown`` after the senders stopped)."""

    # -- component ---------------------------------------------------------------
    def start(self, host: Host) -> None:
        self.open()
        self.sender.start()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.sender.shutdown(timeout_s)
        self.close()

    def consume(self, profiles: Profiles) -> None:
        first: Exception | None = None
        for request in self.requests(profiles):
            try:
                self.sender.submit(request)
            except Exception as exc:   # queue full: keep going with the rest
                first = first or exc
        if first is not None:
            raise first

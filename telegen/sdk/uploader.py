"""Uploads the sampler's buffer as OTLP profiles over gRPC every
``upload_interval``.

The encoding is telegen's own (:mod:`telegen.sdk.encode` on
``telegen.formats.otlp``'s dictionary encoder -> OTLP profiles
v1development), imported on first upload in the uploader thread so
``import telegen.sdk`` stays light; that module needs Python 3.11+ (the
agent's), so on older interpreters uploads fail, are counted and logged once.
Requests that could not be sent wait in a bounded queue (``max_pending``
uploads); beyond it the oldest is dropped and its samples counted in
``dropped_samples``. The agent being down never blocks or raises into the
application.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import threading
from typing import Any

from telegen.sdk.sampler import Buffer, Sampler
from telegen.sdk.stats import Stats

log = logging.getLogger("telegen.sdk")
_EXPORT = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"


class Uploader:
    def __init__(self, sampler: Sampler, stats: Stats, *, endpoint: str, service_name: str,
                 upload_interval: float, timeout: float = 5.0, max_pending: int = 6,
                 headers: dict[str, str] | None = None,
                 resource: dict[str, str | int] | None = None) -> None:
        self.sampler = sampler
        self.stats = stats
        self.endpoint = endpoint
        self.service_name = service_name
        self.interval = upload_interval
        self.timeout = timeout
        self.max_pending = max(1, max_pending)
        self.metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self.resource = dict(resource or {})
        self.pending: collections.deque[tuple[bytes, int]] = collections.deque()
        self._export: Any = None
        self._channel: Any = None
        self._state = "new"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="telegen-sdk-uploader",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self._flush_safely()
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:
                pass

    def _run(self) -> None:
        me = threading.current_thread().ident
        if me is not None:
            self.sampler.ignore.add(me)
        turns = self.sampler.turns
        try:
            turns.at("uploader", 0)            # working from now
            _warm_up()
            while True:
                turns.at("uploader", self.interval)     # a tick lets us in when due
                if self._stop.wait(self.interval):
                    break
                self._flush_safely()
        finally:
            turns.done("uploader")

    def _flush_safely(self) -> None:
        try:
            self.flush()
        except Exception as exc:       # never let the uploader die
            self.stats.errors += 1
            self._set_state("error", f"upload failed: {exc!r}")

    def flush(self) -> None:
        buf = self.sampler.drain()
        if buf.counts:
            n = sum(buf.counts.values())
            try:
                data = self.encode(buf)
            except Exception:
                self.stats.dropped_samples += n
                raise
            self.pending.append((data, n))
            while len(self.pending) > self.max_pending:
                _, lost = self.pending.popleft()
                self.stats.dropped_uploads += 1
                self.stats.dropped_samples += lost
        while self.pending:
            data, n = self.pending[0]
            if not self._send(data):
                return
            self.pending.popleft()
            self.stats.exported_profiles += 1

    # -- encoding --------------------------------------------------------------------
    def encode(self, buf: Buffer) -> bytes:
        import time

        from telegen.sdk.encode import encode
        from telegen.semconv import parse_resource_attributes

        resource: dict[str, str | int] = {
            "process.pid": os.getpid(), "process.runtime.name": "cpython",
            "process.runtime.version": ".".join(str(v) for v in sys.version_info[:3]),
            "process.executable.path": sys.executable,
            "process.executable.name": os.path.basename(sys.executable),
            "host.name": socket.gethostname(),
            "telemetry.sdk.name": "telegen", "service.name": self.service_name}
        # the process's own OTEL_RESOURCE_ATTRIBUTES (as an OpenTelemetry SDK
        # reads them), then what the caller passed
        resource.update(parse_resource_attributes(os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
        resource.update(self.resource)
        resource["service.name"] = self.service_name
        return encode(buf, period=int(round(self.sampler.interval * 1e9)),
                      end_ns=time.time_ns(), resource=resource)

    # -- transport -------------------------------------------------------------------
    def _send(self, data: bytes) -> bool:
        try:
            if self._export is None:
                import grpc

                self._channel = grpc.insecure_channel(self.endpoint, options=[
                    ("grpc.max_reconnect_backoff_ms", 5000)])
                self._export = self._channel.unary_unary(
                    _EXPORT, request_serializer=lambda b: b,
                    response_deserializer=lambda b: b)
            self._export(data, timeout=self.timeout, metadata=self.metadata or None)
        except Exception as exc:
            self.stats.export_failures += 1
            self._set_state("down", f"cannot upload to {self.endpoint}: {exc!r}"[:300])
            return False
        self._set_state("up", f"uploading to {self.endpoint}")
        return True

    def _set_state(self, state: str, message: str) -> None:
        if state != self._state:
            self._state = state
            (log.info if state == "up" else log.warning)("telegen.sdk: %s", message)


def _warm_up() -> None:
    """Import what uploads need now, while the application starts, rather
    than at the first upload: on a loop busy from the start the uploader
    gets the GIL only at ticks (:mod:`telegen.sdk.turns`), and an import's
    many system calls would each wait for one."""
    try:
        import grpc  # noqa: F401

        import telegen.formats.otlp  # noqa: F401
        import telegen.sdk.encode  # noqa: F401
    except Exception:           # reported by the first upload that needs them
        pass

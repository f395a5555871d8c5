"""Send each batch as one OTLP ``ExportProfilesServiceRequest`` over gRPC.

The request is encoded when the batch arrives (``telegen.formats.otlp``) and
queued as bytes, so the on-disk queue stores exactly what goes on the wire.
Errors are classified as the Collector does (see ``exporterhelper.retry``);
a ``RetryInfo`` in the status details sets the next delay. Partial success
(``rejected_profiles``) is logged and counted as
``exporter_partial_success_rejected_profiles``.

In a ``traces`` pipeline the exporter forwards OTLP traces unchanged: the
request bytes the receiver got are queued as they are (``signal: traces`` in
the request's meta) and sent to ``TraceService/Export`` on the same channel,
with the same queue, retries and headers (``exporter_sent_spans``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from telegen.component import CreateSettings
from telegen.exporters.otlp.config import OtlpExporterConfig
from telegen.formats.otlp import encode_request, svc
from telegen.formats.otlp_traces import trace_svc
from telegen.helpers.exporterhelper import QueuedExporter, Request, grpc_error
from telegen.helpers.exporterhelper.rpcstatus import retry_delay
from telegen.pdata import Profiles
from telegen.ptrace import Traces

EXPORT_METHOD = ("/opentelemetry.proto.collector.profiles.v1development."
                 "ProfilesService/Export")
TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_MAX_MESSAGE = 64 * 1024 * 1024


class OtlpExporter(QueuedExporter):
    def __init__(self, settings: CreateSettings, config: OtlpExporterConfig) -> None:
        super().__init__(settings, config.sending_queue, config.retry_on_failure)
        self._config = config
        self._id = str(settings.id)
        self._channel: grpc.Channel | None = None
        self._export: Any = None
        self._export_traces: Any = None
        self._metadata = [(k.lower(), v) for k, v in config.headers.items()]
        self._compression = (grpc.Compression.Gzip if config.compression == "gzip"
                             else grpc.Compression.NoCompression)
        self._rejected = settings.telemetry.counter("exporter_partial_success_rejected_profiles")
        self._sent_spans = settings.telemetry.counter("exporter_sent_spans")
        self._rejected_spans = settings.telemetry.counter(
            "exporter_partial_success_rejected_spans")

    def open(self) -> None:
        target, secure = self._config.target()
        # gRPC's own reconnect backoff grows to 120 s; keep it within the retry
        # interval so a backend that comes back is used by the next retry.
        reconnect_ms = int(max(1.0, self._config.retry_on_failure.max_interval) * 1000)
        options = [("grpc.max_send_message_length", _MAX_MESSAGE),
                   ("grpc.max_receive_message_length", _MAX_MESSAGE),
                   ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_ms)),
                   ("grpc.min_reconnect_backoff_ms", min(1000, reconnect_ms)),
                   ("grpc.max_reconnect_backoff_ms", reconnect_ms)]
        if secure:
            ca, key, cert = self._config.tls.read()   # fails start-up if a file is missing
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                 certificate_chain=cert)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None,
            response_deserializer=svc.ExportProfilesServiceResponse.FromString)
        self._export_traces = self._channel.unary_unary(
            TRACES_METHOD, request_serializer=None,
            response_deserializer=trace_svc.ExportTraceServiceResponse.FromString)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def requests(self, profiles: Profiles) -> Iterable[Request]:
        if not len(profiles):
            return []
        msg = encode_request(profiles, service=self._config.service_name)
        if not msg.resource_profiles:      # nothing with a sample type: nothing to send
            return []
        return [Request(msg.SerializeToString(), profiles.sample_count(),
                        {"profiles": str(len(profiles))})]

    def consume_traces(self, traces: Traces) -> None:
        """Queue one OTLP traces request, unchanged, for forwarding."""
        self.sender.submit(Request(traces.payload, 0,
                                   {"signal": "traces", "spans": str(traces.span_count)}))

    def send(self, request: Request) -> None:
        if self._export is None:
            raise RuntimeError(f"{self._id}: not started")
        traces = request.meta.get("signal") == "traces"
        call = self._export_traces if traces else self._export
        try:
            response, _ = call.with_call(
                request.payload, timeout=self._config.timeout, metadata=self._metadata,
                compression=self._compression)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            trailers = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
            raise grpc_error(code.value[0], f"export to {self._config.endpoint} failed: "
                             f"{code.name} {details}", retry_delay(trailers)) from None
        partial = response.partial_success
        if traces:
            self._sent_spans.add(int(request.meta.get("spans", "0")))
            if partial.rejected_spans:
                self._rejected_spans.add(partial.rejected_spans)
                self.log.warning("%s: backend rejected %d spans: %s", self._id,
                                 partial.rejected_spans, partial.error_message)
            return
        if partial.rejected_profiles:
            self._rejected.add(partial.rejected_profiles)
            self.log.warning("%s: backend rejected %d profiles: %s", self._id,
                             partial.rejected_profiles, partial.error_message)
        elif partial.error_message:
            self.log.info("%s: backend says: %s", self._id, partial.error_message)

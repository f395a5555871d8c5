"""OTLP profiles in: a gRPC ``ProfilesService`` server and an HTTP endpoint.

Both hand the raw bytes to :meth:`OtlpReceiver.accept`, which parses the
request, checks every dictionary index (``telegen.formats.otlp``) and passes
the profiles on. A malformed request gets an error status (gRPC
INVALID_ARGUMENT, HTTP 400), is counted (``receiver_refused_requests``) and
logged at most once a minute; the servers keep serving. If the next component
refuses the data the client gets UNAVAILABLE / 503 so it retries.

Bounds (SECURITY.md): gRPC refuses a message over ``max_recv_msg_size_mib``
*after* decompression (RESOURCE_EXHAUSTED) and more than
``max_concurrent_streams`` RPCs at once; HTTP is bounded by
:mod:`telegen.helpers.httpserver` and ``max_request_body_size``. What the
trust boundary refuses is counted in ``refused_inputs{source,reason}``.
"""

from __future__ import annotations

import time
from concurrent import futures
from typing import Any

import grpc

from telegen.component import Consumer, CreateSettings, Host, PermanentError
from telegen.formats.otlp import OtlpError, decode_request, parse_request, svc
from telegen.pdata import Profiles
from telegen.receivers.otlp.config import OtlpReceiverConfig
from telegen.receivers.otlp.traces import TRACE_SERVICE, TracesIntake
from telegen.untrusted import Refusals

SERVICE = "opentelemetry.proto.collector.profiles.v1development.ProfilesService"


class DownstreamError(Exception):
    """The pipeline did not take the data; the client should retry."""


class OtlpReceiver:
    def __init__(self, settings: CreateSettings, config: OtlpReceiverConfig,
                 next_consumer: Consumer) -> None:
        self._config = config
        self._next = next_consumer
        self._log = settings.logger
        self._id = str(settings.id)
        t = settings.telemetry
        self._accepted = t.counter("receiver_accepted_requests")
        self._accepted_profiles = t.counter("receiver_accepted_profiles")
        self._accepted_samples = t.counter("receiver_accepted_samples")
        self._refused = t.counter("receiver_refused_requests")
        self.refusals = Refusals(t, settings.logger)
        self._grpc: grpc.Server | None = None
        self._http: Any = None
        self._last_log = -1e9
        self.traces = TracesIntake(self._id, config.spanstore, next_consumer, t,
                                   settings.logger, self.refuse)
        self.grpc_port = 0
        self.http_port = 0

    # -- lifecycle ---------------------------------------------------------------
    def start(self, host: Host) -> None:
        self.traces.bind(host)
        endpoint = self._config.grpc_endpoint()
        if endpoint is not None:
            size = self._config.grpc_max_recv_bytes()
            streams = self._config.grpc_max_streams()
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=4,
                                           thread_name_prefix=f"receiver-{self._id}-grpc"),
                # the length is checked on the decompressed message (tested)
                options=[("grpc.max_receive_message_length", size),
                         ("grpc.max_concurrent_streams", streams)],
                maximum_concurrent_rpcs=streams)
            handler = grpc.unary_unary_rpc_method_handler(
                self._grpc_export, request_deserializer=None, response_serializer=None)
            handlers = [grpc.method_handlers_generic_handler(SERVICE, {"Export": handler})]
            if self.traces.enabled:
                trace_handler = grpc.unary_unary_rpc_method_handler(
                    self._grpc_export_traces, request_deserializer=None,
                    response_serializer=None)
                handlers.append(grpc.method_handlers_generic_handler(
                    TRACE_SERVICE, {"Export": trace_handler}))
            server.add_generic_rpc_handlers(tuple(handlers))
            try:
                port = server.add_insecure_port(endpoint)
            except RuntimeError as exc:
                raise OSError(f"cannot listen on {endpoint} (gRPC): {exc}") from None
            if not port:
                raise OSError(f"cannot listen on {endpoint} (gRPC)")
            server.start()
            self._grpc, self.grpc_port = server, port
            self._log.info("%s: OTLP/gRPC on %s", self._id, endpoint)
        endpoint = self._config.http_endpoint()
        if endpoint is not None:
            from telegen.receivers.otlp.http import HttpServer

            try:
                self._http = HttpServer(
                    endpoint, f"receiver-{self._id}-http", profiles=self.accept,
                    traces=self.traces.accept if self.traces.enabled else None,
                    refuse=self.refuse, refusals=self.refusals,
                    max_body=self._config.http_max_body(),
                    allowed_hosts=self._config.http_allowed_hosts())
            except OSError:
                self.shutdown()
                raise
            self.http_port = self._http.port
            self._http.start()
            self._log.info("%s: OTLP/HTTP on http://%s/v1development/profiles",
                           self._id, endpoint)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=min(timeout_s, 5.0)).wait(timeout_s)
            self._grpc = None

    # -- shared ------------------------------------------------------------------
    def accept(self, data: bytes | None = None, request: Any = None) -> bytes:
        """Decode and pass on one request; returns the serialized response.
        Raises OtlpError (malformed) or DownstreamError (retry later)."""
        try:
            if request is None:
                request = parse_request(data or b"")
            profiles = decode_request(request)
        except OtlpError as exc:
            self.refuse(str(exc))
            raise
        except Exception as exc:   # anything odd in a message is the sender's problem
            self.refuse(f"cannot decode: {exc}")
            raise OtlpError(f"cannot decode: {exc}") from None
        samples = sum(len(p) for p in profiles)
        if profiles:
            try:
                self._next.consume(Profiles(profiles))
            except PermanentError as exc:
                self.refuse(f"pipeline refused the data: {exc}")
                raise OtlpError(f"refused: {exc}") from None
            except Exception as exc:
                raise DownstreamError(f"pipeline busy: {exc}") from None
        self._accepted.add(1)
        self._accepted_profiles.add(len(profiles))
        self._accepted_samples.add(samples)
        return bytes(svc.ExportProfilesServiceResponse().SerializeToString())

    def refuse(self, reason: str) -> None:
        self._refused.add(1)
        now = time.monotonic()
        if now - self._last_log > 60:
            self._last_log = now
            self._log.warning("%s: refused a malformed OTLP request: %s", self._id, reason)

    def _grpc_export_traces(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return self.traces.accept(data)
        except OtlpError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:500])
        raise AssertionError("unreachable")   # context.abort always raises

    def _grpc_export(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return self.accept(data)
        except OtlpError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc)[:500])
        except DownstreamError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc)[:500])
        raise AssertionError("unreachable")   # context.abort always raises

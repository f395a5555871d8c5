"""Real backends on loopback for tests: an OTLP profiles gRPC server built from
the official ``opentelemetry-proto`` service, and an HTTP server playing
Pyroscope ``/ingest``. Both record what they receive and can be told to fail."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.profiles.v1development import (  # type: ignore[import-untyped]
    profiles_service_pb2 as svc,
)
from opentelemetry.proto.collector.profiles.v1development import (  # type: ignore[import-untyped]
    profiles_service_pb2_grpc as svc_grpc,
)

from telegen.helpers.exporterhelper.rpcstatus import DETAILS_KEY, status_details
from telegen.testing.profcheck import check as profcheck
from telegen.testing.pyroscope_ingest import Accepted, Refusal, ingest
from telegen.testing.pyroscope_otlp import ExportRefused, Series
from telegen.testing.pyroscope_otlp import convert as pyroscope_convert


def serve_grpc(add_servicer: Callable[[grpc.Server], object], port: int, name: str,
               workers: int = 8) -> tuple[grpc.Server, int]:
    """A started gRPC server on 127.0.0.1:``port`` (0: any) with the servicer
    ``add_servicer`` registers, and its port; the port is not shared
    (``so_reuseport`` off), so a backend restarted on it gets it back."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.so_reuseport", 0)])
    add_servicer(server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    if not port:
        raise OSError(f"{name}: cannot bind")
    server.start()
    return server, port


def stop_grpc(server: grpc.Server | None) -> None:
    if server is not None:
        server.stop(grace=0).wait(5)


@dataclass
class Failure:
    """Answer the next ``times`` calls with ``code`` (and RetryInfo ``delay_s``)."""

    code: grpc.StatusCode
    times: int
    delay_s: float | None = None


@dataclass
class Received:
    request: Any
    metadata: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class OtlpBackend(svc_grpc.ProfilesServiceServicer):  # type: ignore[misc]
    """``ProfilesService/Export`` on 127.0.0.1:``port``; restartable on the same port.

    Every request is run through the ``profcheck`` port (telegen.testing.profcheck):
    a non-conformant one is refused with INVALID_ARGUMENT and its findings kept
    in ``findings``, so any test exporting to this backend fails on them. What
    Pyroscope's OTLP converter would make of each request is kept in
    ``pyroscope_series`` (or its refusal in ``pyroscope_refusals``)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.findings: list[str] = []
        self.pyroscope_series: list[Series] = []
        self.pyroscope_refusals: list[str] = []
        self.received: list[Received] = []
        self.failures: list[Failure] = []
        self.attempts: list[float] = []
        self.partial_rejected = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def start(self) -> OtlpBackend:
        self._server, self.port = serve_grpc(
            lambda server: svc_grpc.add_ProfilesServiceServicer_to_server(self, server),
            self.port, "OtlpBackend")
        return self

    def stop(self) -> None:
        stop_grpc(self._server)
        self._server = None

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with self._lock:
            self.attempts.append(time.monotonic())
            if self.failures:
                f = self.failures[0]
                f.times -= 1
                if f.times <= 0:
                    self.failures.pop(0)
                if f.delay_s is not None:
                    context.set_trailing_metadata(
                        ((DETAILS_KEY, status_details(f.code.value[0], "test", f.delay_s)),))
                context.abort(f.code, "test backend failure")
            findings = profcheck(request)
            if findings:
                self.findings += findings
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "profcheck: " + "; ".join(findings[:5]))
            try:
                self.pyroscope_series += pyroscope_convert(request)
            except ExportRefused as exc:
                self.pyroscope_refusals.append(str(exc))
            self.received.append(Received(request, dict(context.invocation_metadata())))
            response = svc.ExportProfilesServiceResponse()
            if self.partial_rejected:
                response.partial_success.rejected_profiles = self.partial_rejected
                response.partial_success.error_message = "test rejects some"
            return response

    def requests(self) -> list[Any]:
        with self._lock:
            return [r.request for r in self.received]


@dataclass
class Ingest:
    path: str
    query: dict[str, str]
    headers: dict[str, str]      # names lower-cased
    profile: bytes          # the multipart "profile" field (or the raw body)
    at: float = field(default_factory=time.monotonic)
    # /ingest: what Pyroscope would store (see telegen.testing.pyroscope_ingest).
    accepted: Accepted | None = None


class PyroscopeServer:
    """Plays Pyroscope ``POST /ingest`` with its handler's parsing, validation
    and answers (``telegen.testing.pyroscope_ingest``): what it would refuse is
    answered as Pyroscope does and kept in ``refused``. Any other POST is
    recorded as generic."""

    def __init__(self) -> None:
        self.ingested: list[Ingest] = []
        self.refused: list[tuple[int, str]] = []
        self.attempts: list[float] = []
        # Called per request; returns (status, headers) to fail it, or None.
        self.fail: Callable[[int], tuple[int, dict[str, str]] | None] = lambda n: None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    server.attempts.append(time.monotonic())
                    n = len(server.attempts)
                failure = server.fail(n)
                if failure is not None:
                    status, headers = failure
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                ctype = self.headers.get("Content-Type", "")
                data = body
                if ctype.startswith("multipart/form-data"):
                    msg = BytesParser(policy=HTTP).parsebytes(
                        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
                    data = b""
                    for part in msg.iter_parts():
                        if part.get_param("name", header="content-disposition") == "profile":
                            payload = part.get_payload(decode=True)
                            data = payload if isinstance(payload, bytes) else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                accepted = None
                if url.path == "/ingest":
                    try:
                        accepted = ingest(query, ctype, body)
                    except Refusal as exc:
                        with server._lock:
                            server.refused.append((exc.status, str(exc)))
                        answer = json.dumps({"code": "invalid_argument",
                                             "message": str(exc)}).encode()
                        self.send_response(exc.status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(answer)))
                        self.end_headers()
                        self.wfile.write(answer)
                        return
                with server._lock:
                    server.ingested.append(Ingest(url.path, query, headers, data,
                                                  accepted=accepted))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="test-pyroscope", daemon=True)

    def start(self) -> PyroscopeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

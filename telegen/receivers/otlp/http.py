"""OTLP/HTTP profiles: ``POST /v1development/profiles`` (and, when the receiver
takes traces, ``POST /v1/traces``) with a protobuf
(``application/x-protobuf``) or JSON (``application/json``) body, optionally
``Content-Encoding: gzip``. Errors answer with a ``google.rpc.Status`` body
in the request's encoding; 400 malformed, 415 other media types, 503 when the
pipeline is busy (retry)."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from google.protobuf import json_format

from telegen.formats.otlp import OtlpError, svc
from telegen.formats.otlp_traces import traces_from_json
from telegen.helpers.exporterhelper.rpcstatus import Status
from telegen.helpers.httpserver import BackgroundHTTPServer, reply
from telegen.receivers.otlp.traces import TRACES_PATH

PATH = "/v1development/profiles"
MAX_BODY = 64 * 1024 * 1024
_PROTO, _JSON = "application/x-protobuf", "application/json"


# accept(data=None, request=None) -> serialized response; raises OtlpError
# (malformed: 400) or anything else (busy downstream: 503)
Accept = Callable[..., bytes]


class HttpServer(BackgroundHTTPServer):
    """Decodes HTTP bodies and hands them to ``profiles`` (or ``traces``, None
    when the receiver takes no traces); ``refuse(reason)`` counts a bad request."""

    def __init__(self, endpoint: str, name: str, *, profiles: Accept,
                 traces: Accept | None, refuse: Callable[[str], None]) -> None:
        super().__init__(endpoint, _handler(profiles, traces, refuse), name)


def _hex_ids_to_base64(doc: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf JSON wants base64."""
    links = (doc.get("dictionary") or {}).get("linkTable") or []
    for link in links:
        for key in ("traceId", "spanId"):
            if isinstance(link, dict) and isinstance(link.get(key), str):
                try:
                    link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
                except ValueError:
                    pass


def _handler(accept_profiles: Accept, accept_traces: Accept | None,
             refuse: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._reply(405, _PROTO, b"", {"Allow": "POST"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                self._post()
            except Exception as exc:   # never let one request hurt the server
                refuse(f"unexpected: {exc}")
                self._error(500, _PROTO, f"internal error: {exc}")

        def _post(self) -> None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > MAX_BODY:
                refuse(f"body of {length} bytes")
                self._error(413, _PROTO, f"body larger than {MAX_BODY} bytes")
                self.close_connection = True
                return
            body = self.rfile.read(length)
            path = self.path.split("?")[0]
            traces = path == TRACES_PATH and accept_traces is not None
            if path != PATH and not traces:
                self._error(404, _PROTO, f"unknown path; POST to {PATH}" + (
                    f" or {TRACES_PATH}" if accept_traces is not None else ""))
                return
            if ctype not in (_PROTO, _JSON):
                refuse(f"content type {ctype!r}")
                self._error(415, _PROTO, f"unsupported content type {ctype!r}; use "
                                         f"{_PROTO} or {_JSON}")
                return
            try:
                if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                    body = gzip.decompress(body)
                request = None
                if ctype == _JSON and traces:
                    request = traces_from_json(json.loads(body))
                elif ctype == _JSON:
                    doc = json.loads(body)
                    if not isinstance(doc, dict):
                        raise ValueError("the JSON body must be an object")
                    _hex_ids_to_base64(doc)
                    request = json_format.ParseDict(doc, svc.ExportProfilesServiceRequest())
            except (OSError, EOFError, zlib.error, ValueError, json_format.ParseError) as exc:
                refuse(str(exc))
                self._error(400, ctype, f"malformed request: {exc}")
                return
            accept = accept_traces if traces and accept_traces else accept_profiles
            try:
                reply = accept(body, request) if request is None else accept(request=request)
            except OtlpError as exc:
                self._error(400, ctype, str(exc))
                return
            except Exception as exc:
                self._error(503, ctype, str(exc), {"Retry-After": "1"})
                return
            if ctype == _JSON:
                reply = b"{}"
            self._reply(200, ctype, reply)

        def _error(self, code: int, ctype: str, message: str,
                   headers: dict[str, str] | None = None) -> None:
            status = Status(code=3 if code < 500 else 14, message=message[:500])
            body = (json_format.MessageToJson(status).encode() if ctype == _JSON
                    else bytes(status.SerializeToString()))
            self._reply(code, ctype if ctype in (_PROTO, _JSON) else _PROTO, body, headers)

        def _reply(self, code: int, ctype: str, body: bytes,
                   headers: dict[str, str] | None = None) -> None:
            reply(self, code, ctype, body, headers)

    return Handler

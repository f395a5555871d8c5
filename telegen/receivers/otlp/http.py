"""OTLP/HTTP profiles: ``POST /v1development/profiles`` (and, when the receiver
takes traces, ``POST /v1/traces``) with a protobuf
(``application/x-protobuf``) or JSON (``application/json``) body, optionally
``Content-Encoding: gzip``. Errors answer with a ``google.rpc.Status`` body
in the request's encoding; 400 malformed, 413 a body (as sent or inflated)
over ``max_request_body_size``, 415 other media types or encodings, 503 when
the pipeline is busy (retry). Host, Content-Length, timeouts and connection
counts are checked by :mod:`telegen.helpers.httpserver` before this runs."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from google.protobuf import json_format

from telegen.formats.otlp import OtlpError, svc
from telegen.formats.otlp_traces import traces_from_json
from telegen.helpers.exporterhelper.rpcstatus import Status
from telegen.helpers.httpserver import BackgroundHTTPServer, ServerLimits, reply
from telegen.receivers.otlp.config import DEFAULT_MAX_REQUEST_BODY
from telegen.receivers.otlp.traces import TRACES_PATH
from telegen.untrusted import Refusals, Refused, gunzip, read_stream

PATH = "/v1development/profiles"
SOURCE = "otlp_http"
_PROTO, _JSON = "application/x-protobuf", "application/json"


# accept(data=None, request=None) -> serialized response; raises OtlpError
# (malformed: 400) or anything else (busy downstream: 503)
Accept = Callable[..., bytes]


class HttpServer(BackgroundHTTPServer):
    """Decodes HTTP bodies and hands them to ``profiles`` (or ``traces``, None
    when the receiver takes no traces); ``refuse(reason)`` counts a bad request."""

    def __init__(self, endpoint: str, name: str, *, profiles: Accept,
                 traces: Accept | None, refuse: Callable[[str], None],
                 refusals: Refusals | None = None,
                 max_body: int = DEFAULT_MAX_REQUEST_BODY,
                 allowed_hosts: list[str] | None = None) -> None:
        refusals = refusals or Refusals(None, logging.getLogger(f"telegen.{name}"))
        super().__init__(endpoint, _handler(profiles, traces, refuse, refusals, max_body), name,
                         # two bodies at the cap in flight at once; more wait (503 + Retry-After)
                         limits=ServerLimits(max_body=max_body, max_buffered=2 * max_body),
                         allowed_hosts=allowed_hosts or (),
                         refusals=refusals, source=SOURCE)


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


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent, inflated when gzip (at most ``limit`` bytes out)."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gunzip(body, limit)
    raise Refused("content_encoding", f"unsupported Content-Encoding {encoding[:40]!r}")


_REFUSED_STATUS = {"decompressed_too_large": 413, "too_large": 413, "content_encoding": 415}


def _handler(accept_profiles: Accept, accept_traces: Accept | None,
             refuse: Callable[[str], None], refusals: Refusals,
             max_body: int) -> type[BaseHTTPRequestHandler]:
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
            encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
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
            try:   # the server framed the request: the length is there and within max_body
                body = read_stream(self.rfile, max_body,  # type: ignore[arg-type]
                                   int(self.headers.get("Content-Length") or 0))
                body = _inflate(body, encoding, max_body)
            except Refused as exc:
                refuse(str(exc))
                refusals.note_exc(SOURCE, exc)
                self._error(_REFUSED_STATUS.get(exc.reason, 400),
                            ctype, f"refused: {exc}")
                return
            try:
                request = None
                if ctype == _JSON and traces:
                    request = traces_from_json(json.loads(body))
                elif ctype == _JSON:
                    doc = json.loads(body)
                    if not isinstance(doc, dict):
                        raise ValueError("the JSON body must be an object")
                    _hex_ids_to_base64(doc)
                    request = json_format.ParseDict(doc, svc.ExportProfilesServiceRequest())
            except (ValueError, json_format.ParseError) as exc:
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

"""POST gzipped pprof over HTTP.

``pyroscope`` mode: one ``POST <endpoint>/ingest`` per series (a service's
processes of one profile type, ``pyroscope.by_series``) the way
Pyroscope's own Go client sends it: a multipart body with the gzipped pprof
in ``profile`` and a ``sample_type_config`` naming each sample type (so each
profile type lands in the series Pyroscope uses for it, see
``telegen.exporters.http.pyroscope``), and ``name=<service>{labels}``,
``from``/``until`` (unix seconds), ``spyName`` and ``sampleRate`` in the
query, without ``format`` (which would make Pyroscope read the multipart body
as raw pprof). ``generic`` mode: one POST of the gzipped pprof per profile
type per window to ``endpoint``.

The URL is always built from the current config at send time: a queued
request (possibly read back from the on-disk queue) carries only query
parameters, which are filtered and re-encoded, never a URL. Redirects are not
followed (as Pyroscope's Go client): a 3xx is a permanent error, so neither
the body nor ``Authorization`` goes anywhere but the configured endpoint.
Auth and tenant headers are added at send time (never written to the queue).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable

from telegen.component import CreateSettings, PermanentError
from telegen.exporters.http import pyroscope
from telegen.exporters.http.config import HttpExporterConfig
from telegen.formats.pprof import encode
from telegen.helpers.exporterhelper import QueuedExporter, Request, RetryableError, http_error
from telegen.helpers.exporterhelper.config import is_loopback_host
from telegen.helpers.windows import merge_by_type
from telegen.pdata import Profiles

_BOUNDARY = re.compile(r"^multipart/form-data; boundary=[0-9a-f]{32}$")
OCTET = "application/octet-stream"


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """(body, Content-Type) of a form with one file per (field, filename, data)."""
    boundary = uuid.uuid4().hex
    chunks = []
    for field_name, filename, data in parts:
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
        chunks += [head.encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None   # urllib then raises HTTPError with the 3xx


class HttpExporter(QueuedExporter):
    def __init__(self, settings: CreateSettings, config: HttpExporterConfig) -> None:
        super().__init__(settings, config.sending_queue, config.retry_on_failure)
        self._config = config
        self._id = str(settings.id)
        self._ssl: ssl.SSLContext | None = None
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._headers = dict(config.headers)
        if config.tenant_id:
            self._headers["X-Scope-OrgID"] = config.tenant_id
        if config.bearer_token:
            self._headers["Authorization"] = f"Bearer {config.bearer_token}"
        elif config.basic_auth.username:
            pair = f"{config.basic_auth.username}:{config.basic_auth.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()

    def open(self) -> None:
        tls = self._config.tls
        ctx = None
        if self._config.endpoint.startswith("https://"):
            ctx = ssl.create_default_context(cafile=tls.ca_file or None)
            if tls.cert_file:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx
        handlers: list[urllib.request.BaseHandler] = [
            _NoRedirect(), urllib.request.HTTPSHandler(context=ctx)]
        host = urllib.parse.urlsplit(self._config.endpoint).hostname or ""
        if is_loopback_host(host):
            # a loopback endpoint may get credentials in clear text: never
            # through a proxy from the environment (http_proxy) to elsewhere
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def requests(self, profiles: Profiles) -> Iterable[Request]:
        cfg = self._config
        if cfg.mode == "generic":
            for p in merge_by_type(profiles):
                yield Request(encode(p), len(p), {"content_type": OCTET})
            return
        for app, labels, original in pyroscope.by_series(profiles, cfg.service_name,
                                                          cfg.resource_to_labels, cfg.labels):
            p = pyroscope.shape_for_ingest(original)
            params = json.dumps(pyroscope.query(app, labels, p, cfg.spy_name))
            config = pyroscope.sample_type_config(p)
            for part, pprof in pyroscope.chunks(p):
                body, ctype = multipart([("profile", "profile.pprof", pprof),
                                         ("sample_type_config", "sample_type_config.json",
                                          config)])
                yield Request(body, len(part), {"params": params, "content_type": ctype})

    def url(self, request: Request) -> str:
        """The configured endpoint; for Pyroscope, ``/ingest`` plus the
        request's query parameters (known names only, re-encoded)."""
        cfg = self._config
        if cfg.mode == "generic":
            return cfg.endpoint
        params = _stored_params(request.meta)
        query = urllib.parse.urlencode({k: params[k] for k in pyroscope.PARAMETERS
                                        if isinstance(params.get(k), str)})
        return cfg.endpoint.rstrip("/") + "/ingest?" + query

    def send(self, request: Request) -> None:
        url = self.url(request)
        where = url.split("?")[0]
        ctype = request.meta.get("content_type", OCTET)
        if ctype != OCTET and not _BOUNDARY.match(ctype):
            raise PermanentError(f"POST {where}: queued request has a bad Content-Type")
        headers = {**self._headers, "Content-Type": ctype}
        req = urllib.request.Request(url, data=request.payload, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self._config.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            message = f"POST {where}: HTTP {exc.code} {detail}"
            if 300 <= exc.code < 400:
                message += (f" (redirect to {exc.headers.get('Location', '?')!r} not followed: "
                            f"point endpoint at the final URL)")
            if self._config.mode == "pyroscope":
                raise pyroscope.classify(exc.code, detail, exc.headers.get("Retry-After"),
                                         message) from None
            if 300 <= exc.code < 400:
                raise PermanentError(message) from None
            raise http_error(exc.code, message, exc.headers.get("Retry-After")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RetryableError(f"POST {where}: {reason}") from None


def _stored_params(meta: dict[str, str]) -> dict[str, object]:
    """Query parameters of a queued request. Requests queued by older versions
    carry a whole URL: only its query is taken, never its host or path."""
    if "params" in meta:
        try:
            params = json.loads(meta["params"])
        except ValueError:
            return {}
        return params if isinstance(params, dict) else {}
    if "url" in meta:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(meta["url"]).query))
    return {}

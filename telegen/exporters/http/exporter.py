"""POST gzipped pprof over HTTP.

``pyroscope`` mode: one ``POST <endpoint>/ingest`` per profile, the pprof in
multipart field ``profile``, with ``name=<service>.<type>{labels}``,
``from``/``until`` (unix seconds), ``format=pprof``, ``sampleRate``,
``spyName``, ``units`` and ``aggregationType``. ``generic`` mode: one POST of
the gzipped pprof per profile type per window to ``endpoint``. Auth and tenant
headers are added at send time (never written to the on-disk queue). 429 and
5xx retry (honouring ``Retry-After``), other 4xx are permanent.
"""

from __future__ import annotations

import base64
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable

from telegen.component import CreateSettings
from telegen.exporters.http.config import HttpExporterConfig
from telegen.formats.otlp import service_name
from telegen.formats.pprof import encode
from telegen.helpers.exporterhelper import QueuedExporter, Request, RetryableError, http_error
from telegen.helpers.windows import merge_by_type
from telegen.pdata import Profile, Profiles

_UNITS = {"cpu": "samples", "off_cpu": "samples", "wall": "samples", "alloc": "bytes",
          "inuse": "bytes", "mutex": "lock_samples", "block": "lock_samples",
          "goroutine": "goroutines"}
_AVERAGE = {"inuse", "goroutine"}
_BAD_KEY = re.compile(r"[^A-Za-z0-9_]")
_BAD_VALUE = re.compile(r"[{},=\s]")


def pyroscope_name(app: str, profile: Profile, extra: dict[str, str]) -> str:
    """``app.type{k=v,...}``: labels from resource attributes (except
    service.name) and the configured ``labels``, keys made label-safe."""
    labels = {_BAD_KEY.sub("_", k): str(v) for k, v in profile.resource.items()
              if k != "service.name"}
    labels.update({_BAD_KEY.sub("_", k): v for k, v in extra.items()})
    body = ",".join(f"{k}={_BAD_VALUE.sub('_', v)}" for k, v in sorted(labels.items()))
    return f"{app}.{profile.name}{{{body}}}"


def pyroscope_query(app: str, profile: Profile, extra: dict[str, str], spy: str) -> str:
    start = profile.start_ns
    params = {"name": pyroscope_name(app, profile, extra), "format": "pprof", "spyName": spy,
              "units": _UNITS.get(profile.name, "samples"),
              "aggregationType": "average" if profile.name in _AVERAGE else "sum"}
    if start:
        params["from"] = str(start // 1_000_000_000)
        params["until"] = str(max(profile.end_ns // 1_000_000_000, start // 1_000_000_000))
    pt = profile.period_type
    if pt is not None and pt.unit == "nanoseconds" and profile.period > 0:
        params["sampleRate"] = str(round(1e9 / profile.period))
    return urllib.parse.urlencode(params)


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class HttpExporter(QueuedExporter):
    def __init__(self, settings: CreateSettings, config: HttpExporterConfig) -> None:
        super().__init__(settings, config.sending_queue, config.retry_on_failure)
        self._config = config
        self._id = str(settings.id)
        self._ssl: ssl.SSLContext | None = None
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
        if self._config.endpoint.startswith("https://"):
            ctx = ssl.create_default_context(cafile=tls.ca_file or None)
            if tls.cert_file:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
            if tls.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx

    def requests(self, profiles: Profiles) -> Iterable[Request]:
        cfg = self._config
        if cfg.mode == "generic":
            for p in merge_by_type(profiles):
                yield Request(encode(p), len(p), {"url": cfg.endpoint,
                                                  "content_type": "application/octet-stream"})
            return
        base = cfg.endpoint.rstrip("/") + "/ingest?"
        for p in profiles:
            app = service_name(p.resource, cfg.service_name)
            body, ctype = multipart("profile", "profile.pprof", encode(p))
            url = base + pyroscope_query(app, p, cfg.labels, cfg.spy_name)
            yield Request(body, len(p), {"url": url, "content_type": ctype})

    def send(self, request: Request) -> None:
        url = request.meta["url"]
        headers = {**self._headers, "Content-Type": request.meta["content_type"]}
        req = urllib.request.Request(url, data=request.payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self._config.timeout,
                                        context=self._ssl) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise http_error(exc.code, f"POST {url.split('?')[0]}: HTTP {exc.code} {detail}",
                             exc.headers.get("Retry-After")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RetryableError(f"POST {url.split('?')[0]}: {reason}") from None

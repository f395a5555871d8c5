"""Exporters against the attacks of issue #20, performed for real.

* A queue file on disk rewritten to point at another URL: the request still
  goes to the endpoint of the current config (http and otlp exporters).
* A real local server answering a redirect to a second local server: the
  exporter does not follow redirects at all (as Pyroscope's Go client,
  grafana/pyroscope-go upstream/remote/remote.go, which returns the 3xx), so
  neither the profile nor ``Authorization`` reaches the second server; urllib
  would otherwise follow 301/302/303 with the Authorization header, https to
  http included.
* ``telegen validate`` on a config sending basic or bearer auth over plain
  ``http://`` to a non-loopback host: exit code 2 with a clear message.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from telegen.component import Kind
from telegen.config import build_component_config
from telegen.exporters.http.factory import FACTORY as HTTP
from telegen.exporters.otlp.factory import FACTORY as OTLP
from telegen.pdata import Profiles
from telegen.telemetry import Registry
from telegen.testing.agent import free_port, telegen, wait_until
from telegen.testing.backends import OtlpBackend, PyroscopeServer
from telegen.testing.pprof_checks import synthetic_profiles
from telegen.testing.settings import counter, create_settings


class Recorder:
    """An HTTP server that records every request (path, headers) and answers
    ``status`` with ``headers``."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                recorder.seen.append((self.command, self.path,
                                      {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _any  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def attacker() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.stop()


def _create(factory: Any, raw: dict[str, object], reg: Registry) -> Any:
    cfg = build_component_config(factory, raw, f"exporters::{factory.type}")
    return factory.create(create_settings(Kind.EXPORTER, factory.type, reg), cfg, None)


def _queued(storage: Path) -> list[Path]:
    return sorted(storage.rglob("*.req"))


def _rewrite_meta(path: Path, change: dict[str, str]) -> None:
    """Edit the JSON header of a queued request in place (magic, length, JSON, payload)."""
    data = path.read_bytes()
    (n,) = struct.unpack(">I", data[4:8])
    header = json.loads(data[8:8 + n])
    header["meta"].update(change)
    new = json.dumps(header).encode()
    path.write_bytes(data[:4] + struct.pack(">I", len(new)) + new + data[8 + n:])


def _queue_one(factory: Any, raw: dict[str, object], storage: Path) -> Path:
    """Run an exporter against a dead endpoint until its request sits on disk."""
    reg = Registry()
    exp = _create(factory, {**raw, "sending_queue": {"storage": str(storage)},
                            "retry_on_failure": {"initial_interval": "30s",
                                                 "max_interval": "30s"}}, reg)
    exp.start(None)
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: counter(reg, "exporter_retries") >= 1, 10)
    exp.shutdown(2)
    (path,) = _queued(storage)
    return path


def test_http_queue_file_cannot_redirect_the_upload(tmp_path: Path, attacker: Recorder) -> None:
    dead = free_port()
    path = _queue_one(HTTP, {"endpoint": f"http://127.0.0.1:{dead}", "service_name": "shop",
                             "bearer_token": "s3cret"}, tmp_path)
    stolen = f"http://127.0.0.1:{attacker.port}/steal?x=1"
    params = json.loads(json.loads(path.read_bytes()[8:8 + struct.unpack(
        ">I", path.read_bytes()[4:8])[0]])["meta"]["params"])
    params.update({"format": "pprof", "name": "shop{}", "spyName": "a\r\nX-Evil: 1"})
    _rewrite_meta(path, {"url": stolen, "endpoint": stolen, "params": json.dumps(params)})

    server = PyroscopeServer().start()
    try:
        reg = Registry()
        exp = _create(HTTP, {"endpoint": f"http://127.0.0.1:{server.port}",
                             "service_name": "shop", "bearer_token": "s3cret",
                             "sending_queue": {"storage": str(tmp_path)}}, reg)
        exp.start(None)
        assert wait_until(lambda: len(server.ingested) == 1, 10)
        exp.shutdown(2)
    finally:
        server.stop()
    assert attacker.seen == []
    got = server.ingested[0]
    assert got.path == "/ingest" and "format" not in got.query   # unknown params dropped
    assert got.query["spyName"] == "a\r\nX-Evil: 1"               # a value, re-encoded
    assert "x-evil" not in got.headers
    assert got.headers["authorization"] == "Bearer s3cret"
    assert _queued(tmp_path) == []


def test_otlp_queue_file_cannot_redirect_the_export(tmp_path: Path, attacker: Recorder) -> None:
    dead = free_port()
    path = _queue_one(OTLP, {"endpoint": f"127.0.0.1:{dead}", "tls": {"insecure": True}},
                      tmp_path)
    _rewrite_meta(path, {"url": f"http://127.0.0.1:{attacker.port}",
                         "endpoint": f"127.0.0.1:{attacker.port}"})
    backend = OtlpBackend().start()
    try:
        exp = _create(OTLP, {"endpoint": f"127.0.0.1:{backend.port}", "tls": {"insecure": True},
                             "sending_queue": {"storage": str(tmp_path)}}, Registry())
        exp.start(None)
        assert wait_until(lambda: len(backend.requests()) == 1, 10)
        exp.shutdown(2)
    finally:
        backend.stop()
    assert attacker.seen == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(status: int, attacker: Recorder,
                                    caplog: pytest.LogCaptureFixture) -> None:
    redirector = Recorder(status, {"Location": f"http://127.0.0.1:{attacker.port}/ingest"})
    try:
        reg = Registry()
        exp = _create(HTTP, {"endpoint": f"http://127.0.0.1:{redirector.port}",
                             "service_name": "shop",
                             "basic_auth": {"username": "u", "password": "p"}}, reg)
        exp.start(None)
        exp.consume(Profiles(synthetic_profiles()[:1]))
        assert wait_until(lambda: counter(reg, "exporter_send_failed_samples") > 0, 10)
        exp.shutdown(2)
    finally:
        redirector.stop()
    assert attacker.seen == []                       # neither the body nor Authorization
    assert len(redirector.seen) == 1                 # a 3xx is permanent: no retry
    assert redirector.seen[0][2]["authorization"].startswith("Basic ")
    assert counter(reg, "exporter_retries") == 0
    assert "not followed" in caplog.text


@pytest.mark.parametrize(("exporter", "auth"), [
    ("http", "bearer_token: tok"),
    ("http", "basic_auth: {username: u, password: p}"),
    ("http", "headers: {Authorization: 'Bearer tok'}"),
    ("otlp", "headers: {authorization: 'Bearer tok'}\n    tls: {insecure: true}"),
])
def test_credentials_over_plain_http_to_a_remote_host_are_refused(
        tmp_path: Path, exporter: str, auth: str) -> None:
    endpoint = "http://pyroscope.example:4040" if exporter == "http" else \
        "collector.example:4317"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""receivers:
  pprof:
    paths: [{tmp_path}/*.pprof]
exporters:
  {exporter}:
    endpoint: {endpoint}
    {auth}
service:
  pipelines:
    profiles:
      receivers: [pprof]
      exporters: [{exporter}]
""")
    proc = telegen("validate", "-c", str(cfg))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "clear text" in proc.stderr and "example" in proc.stderr
    # the same config to loopback, or over https, is fine
    for ok in (endpoint.replace("pyroscope.example", "127.0.0.1")
               .replace("collector.example", "127.0.0.1"),
               endpoint.replace("http://", "https://") if exporter == "http" else None):
        if ok is None:
            continue
        cfg.write_text(cfg.read_text().replace(endpoint, ok))
        proc = telegen("validate", "-c", str(cfg))
        assert proc.returncode == 0, proc.stderr
        cfg.write_text(cfg.read_text().replace(ok, endpoint))


def test_planted_queue_files_neither_block_nor_leak(tmp_path: Path) -> None:
    """A FIFO and a symlink to a secret named like queue files: the sender
    neither blocks on the FIFO nor reads or deletes the symlink's target, and
    keeps sending the real queued request."""
    import os

    dead = free_port()
    path = _queue_one(HTTP, {"endpoint": f"http://127.0.0.1:{dead}", "service_name": "shop"},
                      tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("root only")
    os.mkfifo(path.parent / "0000000000000005.req")
    os.symlink(secret, path.parent / "0000000000000006.req")
    server = PyroscopeServer().start()
    try:
        exp = _create(HTTP, {"endpoint": f"http://127.0.0.1:{server.port}",
                             "service_name": "shop", "sending_queue": {
                                 "storage": str(tmp_path), "num_consumers": 1}}, Registry())
        exp.start(None)
        assert wait_until(lambda: len(server.ingested) == 1, 10)
        exp.shutdown(2)
    finally:
        server.stop()
    assert secret.read_text() == "root only"
    assert _queued(tmp_path) == []            # the planted names are gone, the target is not
    assert server.refused == []


def test_loopback_credentials_never_go_through_an_environment_proxy(
        attacker: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """http_proxy set in the agent's environment: a loopback endpoint (allowed
    in clear text) is reached directly, the proxy never sees Authorization."""
    server = PyroscopeServer().start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{attacker.port}")
    monkeypatch.setenv("no_proxy", "")
    try:
        exp = _create(HTTP, {"endpoint": f"http://127.0.0.1:{server.port}",
                             "service_name": "shop", "bearer_token": "s3cret"}, Registry())
        exp.start(None)
        exp.consume(Profiles(synthetic_profiles()[:1]))
        assert wait_until(lambda: len(server.ingested) == 1, 10)
        exp.shutdown(2)
    finally:
        server.stop()
    assert attacker.seen == []

"""The debuginfod client against a real HTTP server on loopback that serves
chosen bytes: wrong build-id, oversize files, 404s, and a closed port."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from telegen.symbols.debuginfod import DebuginfodClient, urls_from_env
from telegen.symbols.elf import read_build_id
from telegen.telemetry import Counter


class _Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                body = server.files.get(self.path.split("/")[2]) if \
                    self.path.startswith("/buildid/") else None
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(scope="module")
def two_binaries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is not installed")
    d = tmp_path_factory.mktemp("bins")
    out = []
    for name, body in (("a", "int main(void){return 1;}"), ("b", "int main(void){return 2;}")):
        (d / f"{name}.c").write_text(body)
        subprocess.run(["gcc", "-g", "-o", str(d / name), str(d / f"{name}.c")], check=True)
        out.append(d / name)
    return out[0], out[1]


def _client(url: str, tmp_path: Path, **kw: object) -> tuple[DebuginfodClient, dict[str, Counter]]:
    counters = {"hits": Counter(), "misses": Counter(), "errors": Counter()}
    return DebuginfodClient([url], str(tmp_path / "cache"), counters=counters, **kw), counters


def test_download_checked_and_cached(server, tmp_path, two_binaries) -> None:
    a, _b = two_binaries
    bid = read_build_id(str(a))
    server.files[bid] = a.read_bytes()
    client, c = _client(server.url, tmp_path)
    path = client.debuginfo(bid)
    assert path is not None and read_build_id(path) == bid
    assert client.debuginfo(bid) == path            # second time from the disk cache
    assert len(server.requests) == 1
    assert (c["hits"].value, c["misses"].value, c["errors"].value) == (2, 0, 0)


def test_wrong_build_id_is_rejected(server, tmp_path, two_binaries) -> None:
    a, b = two_binaries
    bid = read_build_id(str(a))
    server.files[bid] = b.read_bytes()              # the server lies
    client, c = _client(server.url, tmp_path)
    assert client.debuginfo(bid) is None
    assert c["errors"].value == 1
    assert not (tmp_path / "cache" / bid / "debuginfo").exists()


def test_size_cap(server, tmp_path, two_binaries) -> None:
    a, _ = two_binaries
    bid = read_build_id(str(a))
    server.files[bid] = a.read_bytes()
    client, c = _client(server.url, tmp_path, max_size=100)
    assert client.debuginfo(bid) is None
    assert c["errors"].value == 1


def test_missing_is_negative_cached(server, tmp_path) -> None:
    client, c = _client(server.url, tmp_path, negative_ttl_s=60)
    bid = "ab" * 20
    assert client.debuginfo(bid) is None
    assert client.debuginfo(bid) is None
    assert len(server.requests) == 1
    assert c["misses"].value == 1
    expired, _ = _client(server.url, tmp_path, negative_ttl_s=0)
    assert expired.debuginfo(bid) is None and expired.debuginfo(bid) is None
    assert len(server.requests) == 3


def test_unreachable_server_counts_an_error(tmp_path) -> None:
    import socket

    with socket.socket() as s:       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client, c = _client(f"http://127.0.0.1:{port}", tmp_path, timeout_s=2)
    assert client.debuginfo("cd" * 20) is None
    assert c["errors"].value == 1


def test_urls_from_env() -> None:
    assert urls_from_env("http://a/  https://b ") == ["http://a/", "https://b"]
    assert urls_from_env("") == []

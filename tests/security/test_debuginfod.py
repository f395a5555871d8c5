"""Hostile debuginfod servers, for real, on this machine's own addresses:
plain http to a non-loopback address, a server trickling one byte at a time
(headers or body), an endless body, gzip bombs, redirects to http and to
file://, path-like build-ids — and one slow download that must not hold up
lookups of other build-ids."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from telegen.symbols.debuginfod import DebuginfodClient
from telegen.symbols.elf import read_build_id
from telegen.telemetry import Counter, Registry
from telegen.testing import require
from telegen.untrusted import Refusals

Handler = Callable[[BaseHTTPRequestHandler, str], None]   # (request, build-id)


class Server:
    """A real HTTP server; ``handle`` decides what each build-id gets."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[str] = []
        self.routes: dict[str, Handler] = {}
        server = self

        class Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                parts = self.path.split("/")
                route = server.routes.get(parts[2] if len(parts) > 2 else "")
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self, parts[2])
                except OSError:
                    pass     # the client hung up: what a deadline does

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Request)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def outside_address() -> str:
    """This host's own non-loopback IPv4 address (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            addr = ""
    require.prerequisite(bool(addr) and not addr.startswith("127."),
                         "a non-loopback IPv4 address on this host")
    return str(addr)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require.tools("gcc", provider="gcc, scripts/setup-host.sh")
    d = tmp_path_factory.mktemp("dbg")
    (d / "a.c").write_text("int main(void){return 7;}\n")
    subprocess.run(["gcc", "-g", "-o", str(d / "a"), str(d / "a.c")], check=True)
    return d / "a"


class Client:
    def __init__(self, urls: list[str], tmp: Path, **kw: object) -> None:
        self.registry = Registry()
        telemetry = self.registry.for_component("processor", "symbolize")
        self.errors = Counter()
        self.cache = tmp / "cache"
        self.client = DebuginfodClient(
            urls, str(self.cache), counters={"errors": self.errors},
            refusals=Refusals(telemetry, logging.getLogger("test.debuginfod")),
            **kw)  # type: ignore[arg-type]

    def refused(self, reason: str) -> float:
        key = ('refused_inputs{component="symbolize",kind="processor",'
               f'reason="{reason}",source="debuginfod"}}')
        return self.registry.snapshot().get(key, 0)

    def leftovers(self) -> list[str]:
        return [str(p) for p in self.cache.rglob("*") if p.is_file()] \
            if self.cache.exists() else []


def serve_bytes(body: bytes, *, encoding: str = "") -> Handler:
    def handle(req: BaseHTTPRequestHandler, _bid: str) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(len(body)))
        if encoding:
            req.send_header("Content-Encoding", encoding)
        req.end_headers()
        req.wfile.write(body)
    return handle


# -- plain http ------------------------------------------------------------------

def test_plain_http_to_a_non_loopback_address_is_refused(tmp_path: Path, binary: Path) -> None:
    outside = Server(outside_address())
    try:
        bid = read_build_id(str(binary))
        outside.routes[bid] = serve_bytes(binary.read_bytes())
        c = Client([outside.url], tmp_path)
        assert c.client.urls == []
        assert c.client.debuginfo(bid) is None
        assert outside.requests == []                    # never contacted
        assert c.refused("insecure_url") == 1
        allowed = Client([outside.url], tmp_path / "allowed", allow_insecure=True)
        path = allowed.client.debuginfo(bid)             # explicitly allowed: works
        assert path is not None and read_build_id(path) == bid
        assert len(outside.requests) == 1
    finally:
        outside.close()


def test_redirects_to_insecure_or_other_schemes_are_refused(server: Server, tmp_path: Path,
                                                           binary: Path) -> None:
    outside = Server(outside_address())
    try:
        bid = read_build_id(str(binary))
        outside.routes[bid] = serve_bytes(binary.read_bytes())
        targets = iter([f"{outside.url}/buildid/{bid}/debuginfo", "file:///etc/passwd"])

        def redirect(req: BaseHTTPRequestHandler, _bid: str) -> None:
            req.send_response(302)
            req.send_header("Location", next(targets))
            req.send_header("Content-Length", "0")
            req.end_headers()

        server.routes[bid] = redirect
        c = Client([server.url], tmp_path, negative_ttl_s=0)
        assert c.client.debuginfo(bid) is None
        assert c.client.debuginfo(bid) is None
        assert outside.requests == []
        assert c.refused("insecure_redirect") == 2
        assert c.leftovers() == []
    finally:
        outside.close()


# -- time and size -------------------------------------------------------------------

def test_a_trickling_body_is_cut_at_the_deadline(server: Server, tmp_path: Path) -> None:
    def trickle(req: BaseHTTPRequestHandler, _bid: str) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(10_000))
        req.end_headers()
        for _ in range(10_000):
            req.wfile.write(b"\x7f")
            req.wfile.flush()
            time.sleep(0.1)       # far inside the 5 s per-read timeout

    bid = "ab" * 20
    server.routes[bid] = trickle
    c = Client([server.url], tmp_path, timeout_s=5.0, deadline_s=1.5)
    t0 = time.monotonic()
    assert c.client.debuginfo(bid) is None
    took = time.monotonic() - t0
    assert 1.4 < took < 2.5, took
    assert c.refused("deadline") == 1 and c.errors.value == 1
    assert c.leftovers() == []


def test_trickling_headers_are_cut_at_the_deadline(server: Server, tmp_path: Path) -> None:
    def slow_headers(req: BaseHTTPRequestHandler, _bid: str) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 1000:
            req.wfile.write(bytes([byte]))
            req.wfile.flush()
            time.sleep(0.1)

    bid = "cd" * 20
    server.routes[bid] = slow_headers
    c = Client([server.url], tmp_path, timeout_s=5.0, deadline_s=1.0)
    t0 = time.monotonic()
    assert c.client.debuginfo(bid) is None
    assert time.monotonic() - t0 < 2.0
    assert c.refused("deadline") == 1


def test_an_endless_body_is_refused_at_the_size_cap(server: Server, tmp_path: Path) -> None:
    sent = [0]

    def endless(req: BaseHTTPRequestHandler, _bid: str) -> None:
        req.send_response(200)
        req.send_header("Connection", "close")    # no Content-Length: read to EOF
        req.end_headers()
        block = b"\0" * (1 << 16)
        for _ in range(4096):                      # 256 MiB if nobody stops it
            req.wfile.write(block)
            sent[0] += len(block)

    bid = "ef" * 20
    server.routes[bid] = endless
    c = Client([server.url], tmp_path, max_size=1 << 20)
    assert c.client.debuginfo(bid) is None
    assert c.refused("too_large") == 1
    assert c.leftovers() == []
    time.sleep(0.2)
    assert sent[0] < 64 << 20, sent[0]     # the client hung up long before the end


def test_declared_length_over_the_cap_is_refused_before_reading(server: Server,
                                                                tmp_path: Path) -> None:
    def huge(req: BaseHTTPRequestHandler, _bid: str) -> None:
        req.send_response(200)
        req.send_header("Content-Length", str(1 << 40))
        req.end_headers()
        req.wfile.write(b"\0" * 4096)

    bid = "0123456789abcdef"
    server.routes[bid] = huge
    c = Client([server.url], tmp_path, max_size=1 << 20)
    assert c.client.debuginfo(bid) is None
    assert c.refused("too_large") == 1


# -- gzip ------------------------------------------------------------------------------

def peak_rss_kib() -> int:
    with open("/proc/self/status") as fh:
        return int(fh.read().split("VmHWM:")[1].split()[0])


def reset_peak_rss_kib() -> int:
    """Reset this process's peak RSS to its current RSS (clear_refs 5) and return it."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return peak_rss_kib()


def gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes gzipped, without holding them in memory."""
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    deflate = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    for _ in range(size // len(block)):
        out.append(deflate.compress(block))
    out.append(deflate.flush())
    crc = 0
    for _ in range(size // len(block)):
        crc = zlib.crc32(block, crc)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


def test_gzip_bodies_are_inflated_within_bounds(server: Server, tmp_path: Path,
                                                binary: Path) -> None:
    bid = read_build_id(str(binary))
    server.routes[bid] = serve_bytes(gzip.compress(binary.read_bytes()), encoding="gzip")
    c = Client([server.url], tmp_path)
    path = c.client.debuginfo(bid)
    assert path is not None and Path(path).read_bytes() == binary.read_bytes()

    bomb_id, nested_id = "12" * 20, "34" * 20
    bomb = gzip_zeros(1 << 30)                              # 1 GiB of zeros, ~1 MB
    server.routes[bomb_id] = serve_bytes(bomb, encoding="gzip")
    server.routes[nested_id] = serve_bytes(gzip.compress(gzip.compress(b"\0" * 4096)),
                                           encoding="gzip")
    bombed = Client([server.url], tmp_path / "bomb")       # default cap: 1 GiB raw, 16 MiB gzip
    before = reset_peak_rss_kib()
    assert bombed.client.debuginfo(bomb_id) is None
    grew_mib = (peak_rss_kib() - before) / 1024
    assert grew_mib < 50, grew_mib
    assert bombed.refused("decompressed_too_large") == 1
    assert bombed.client.debuginfo(nested_id) is None
    assert bombed.refused("nested_gzip") == 1
    assert bombed.leftovers() == []


# -- build-ids ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../../../etc/shadow", "abcd1234/../../x",
                                 "abcd1234\n", "ABCD%2f..%2f", "ab", "g" * 40, ""])
def test_build_ids_are_hex_before_any_url_or_path(server: Server, tmp_path: Path,
                                                 bad: str) -> None:
    c = Client([server.url], tmp_path)
    assert c.client.debuginfo(bad) is None
    assert server.requests == []
    assert c.refused("bad_build_id") == 1
    with pytest.raises(ValueError):
        c.client.cached_path(bad)


def stalling(release: threading.Event) -> Callable[[BaseHTTPRequestHandler, str], None]:
    """A route that starts an ELF body and stalls until ``release``, then hangs
    up (the short body ends the download)."""
    def slow(req: BaseHTTPRequestHandler, _bid: str) -> None:
        req.send_response(200)
        req.send_header("Content-Length", "100")
        req.end_headers()
        req.wfile.write(b"\x7fELF")
        req.wfile.flush()
        release.wait(10)
        req.close_connection = True
    return slow


# -- no lock over the network -----------------------------------------------------------

def test_a_slow_download_does_not_hold_up_other_build_ids(server: Server, tmp_path: Path,
                                                          binary: Path) -> None:
    slow_id, fast_id = "5a" * 20, read_build_id(str(binary))
    release = threading.Event()

    slow = stalling(release)
    server.routes[slow_id] = slow
    server.routes[fast_id] = serve_bytes(binary.read_bytes())
    c = Client([server.url], tmp_path, deadline_s=8.0)
    done: dict[str, float] = {}
    t0 = time.monotonic()

    def fetch(bid: str) -> None:
        c.client.debuginfo(bid)
        done[bid] = time.monotonic() - t0

    slow_threads = [threading.Thread(target=fetch, args=(slow_id,)) for _ in range(3)]
    for t in slow_threads:
        t.start()
    while not any(r.startswith(f"/buildid/{slow_id}") for r in server.requests):
        time.sleep(0.01)
    assert c.client.debuginfo(fast_id) is not None
    fast_took = time.monotonic() - t0
    assert fast_took < 1.0, fast_took
    assert slow_id not in done                           # still downloading
    release.set()
    for t in slow_threads:
        t.join(10)
    assert sum(r.startswith(f"/buildid/{slow_id}") for r in server.requests) == 1  # one download


def test_real_debuginfod_over_loopback_http(tmp_path: Path, binary: Path) -> None:
    """elfutils' own server (Debian package ``debuginfod``) on 127.0.0.1: the
    default policy (plain http only to loopback) keeps it working."""
    require.tools("debuginfod", provider="debuginfod, scripts/setup-host.sh")
    src = tmp_path / "index"
    src.mkdir()
    shutil.copy(binary, src / "a")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "debuginfod.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["debuginfod", "-F", str(src), "-p", str(port),
                             "-d", str(tmp_path / "db.sqlite"), "-t", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        bid = read_build_id(str(binary))
        c = Client([f"http://127.0.0.1:{port}"], tmp_path, negative_ttl_s=0, deadline_s=10)
        deadline = time.monotonic() + 60
        path = None
        while path is None and time.monotonic() < deadline and proc.poll() is None:
            path = c.client.debuginfo(bid)
            if path is None:
                time.sleep(0.5)
        assert path is not None, (tmp_path / "debuginfod.log").read_text()[-2000:]
        assert read_build_id(path) == bid and os.path.getsize(path) > 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_pushed_build_id_download_does_not_hold_the_symbolizer(server: Server,
                                                                 tmp_path: Path,
                                                                 binary: Path) -> None:
    """Through the symbolize processor: while one pipeline thread waits for a
    slow debuginfod download of a pushed build-id, another thread's observed
    frames are symbolized at once."""
    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.pdata import CPU, PUSHED, Frame, FrameKind, Mapping, Profile, Profiles
    from telegen.processors.symbolize.config import SymbolizeConfig
    from telegen.processors.symbolize.symbolize import SymbolizeProcessor
    from telegen.symbols.elf import ElfFile
    from telegen.testing.sink import Sink

    slow_id = "77" * 20
    release = threading.Event()

    slow = stalling(release)
    server.routes[slow_id] = slow
    sink = Sink()
    proc = SymbolizeProcessor(
        CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                       Registry().for_component("processor", "symbolize"),
                       logging.getLogger("t")),
        SymbolizeConfig(debuginfod_urls=[server.url], debuginfod_deadline=8.0,
                        debuginfod_cache_dir=str(tmp_path / "cache"),
                        debug_dirs=[str(tmp_path / "none")]), sink)
    pushed = Profile(name="cpu", sample_types=CPU)
    pushed.origin = PUSHED
    pushed.add((Frame(FrameKind.NATIVE, 0x1234, Mapping(0, 1 << 20, 0, "/x", slow_id)),),
               [1, 1])
    elf = ElfFile(str(binary))
    table = elf.symbols(".symtab")
    assert table is not None
    main_vaddr = table.starts[table.names.index("main")]
    seg = next(s for s in elf.segments if s.vaddr <= main_vaddr < s.vaddr + s.memsz)
    elf.close()
    observed = Profile(name="cpu", sample_types=CPU)
    observed.add((Frame(FrameKind.NATIVE, main_vaddr - seg.vaddr + seg.offset,
                        Mapping(0, 1 << 20, 0, str(binary))),), [1, 1])
    waiting = threading.Thread(target=proc.consume, args=(Profiles([pushed]),))
    try:
        waiting.start()
        while not any(r.startswith(f"/buildid/{slow_id}") for r in server.requests):
            time.sleep(0.01)
        t0 = time.monotonic()
        proc.consume(Profiles([observed]))
        took = time.monotonic() - t0
        assert waiting.is_alive()                       # still downloading
        assert took < 1.0, took
        names = [f.name for s in sink.profiles()[-1] for f in s.stack]
        assert names == ["main"], names
    finally:
        release.set()
        waiting.join(15)
        proc.shutdown()


def test_https_goes_through_the_configured_proxy_as_a_tunnel(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """$https_proxy is honoured (a CONNECT tunnel: TLS stays end to end); a
    proxy that refuses the tunnel is an error, counted, nothing cached."""
    seen: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def proxy() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(conn.recv(4096).split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    try:
        c = Client(["https://debuginfod.example.invalid"], tmp_path)
        assert c.client.debuginfo("ab" * 20) is None
        thread.join(5)
    finally:
        listener.close()
    assert [line.rsplit(b" ", 1)[0] for line in seen] == [
        b"CONNECT debuginfod.example.invalid:443"]
    assert c.errors.value == 1 and c.leftovers() == []

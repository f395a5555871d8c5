"""Hostile clients against every server the agent runs (SECURITY.md,
"Servers"): DNS rebinding (foreign ``Host:``), idle and half-open
connections, slow heads and bodies, bodies declared too large or with no
length, more connections than the cap, and gRPC with a message that is small
compressed and large inflated. Most attacks go to the real agent
(``python -m telegen run``); the timeouts and the cap, whose defaults are
seconds and hundreds, to a server built with small ones."""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import grpc
import pytest

from telegen.component import ConfigError, Kind
from telegen.config import build_component_config
from telegen.exporters.otlp.exporter import EXPORT_METHOD
from telegen.extensions.ui.factory import FACTORY as UI_FACTORY
from telegen.formats.otlp import encode_request
from telegen.helpers.httpserver import BackgroundHTTPServer, ServerLimits, reply
from telegen.receivers.otlp.factory import FACTORY as OTLP_FACTORY
from telegen.telemetry import Registry
from telegen.testing.hostile import (
    SERVERS,
    AgentServers,
    raw_exchange,
    request,
    start_agent_servers,
)
from telegen.testing.pprof_checks import synthetic_profiles
from telegen.testing.settings import create_settings
from telegen.untrusted import Refusals

OTLP_PATH = "/v1development/profiles"
# a GET (or POST) each server answers normally, and what it answers
NORMAL = {"otlp_http": ("GET", OTLP_PATH, 405), "ui_http": ("GET", "/", 200),
          "spanstore_http": ("GET", "/spans", 200), "metrics_http": ("GET", "/metrics", 200)}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServers]:
    a = start_agent_servers(tmp_path_factory.mktemp("servers"), grpc_max_mib=1)
    yield a
    a.stop()


def _valid_request() -> bytes:
    return bytes(encode_request(synthetic_profiles()).SerializeToString())


def _post_profiles(port: int, body: bytes, **headers: str) -> int:
    status, _ = request(port, "POST", OTLP_PATH, body=body,
                        headers={"Content-Type": "application/x-protobuf", **headers})
    return status


def test_foreign_host_gets_421_from_every_server(agent: AgentServers) -> None:
    before = agent.refused()
    for name in SERVERS:
        port = agent.ports[name]
        method, path, normal = NORMAL[name]
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io",
                     "localhost.attacker.example", "[::2]:80"):
            status, _ = request(port, method, path, host=host)
            assert status == 421, (name, host, status)
        for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}",
                     "[::1]", f"[::1]:{port}", "LOCALHOST."):
            assert request(port, method, path, host=host)[0] == normal, (name, host)
    # a rebinding page POSTing profiles is refused before the body is looked at
    assert _post_profiles(agent.ports["otlp_http"], _valid_request(),
                          Host="attacker.example") == 421
    assert _post_profiles(agent.ports["otlp_http"], _valid_request()) == 200
    after = agent.refused()
    for name in SERVERS:
        added = after.get((name, "host"), 0) - before.get((name, "host"), 0)
        assert added >= 5, (name, added)
    log = agent.log_text()
    for name in SERVERS:   # logged once per (source, reason), however many refusals
        assert log.count(f"refused {name} (host)") == 1, name


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:")[1].split()[0])


def test_idle_half_open_connections_do_not_delay_a_request(agent: AgentServers) -> None:
    socks = []
    for name in ("ui_http", "otlp_http"):    # workers started: the count is the steady one
        request(agent.ports[name], *NORMAL[name][:2])
    threads = _threads(agent.proc.pid)
    try:
        for name in ("ui_http", "otlp_http"):
            for i in range(100):    # 200 in all: half silent, half stopping mid-head
                s = socket.create_connection(("127.0.0.1", agent.ports[name]), timeout=5)
                if i % 2:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                socks.append(s)
        time.sleep(0.2)
        assert _threads(agent.proc.pid) <= threads + 8    # pools of 4: no thread per connection
        for name in ("ui_http", "otlp_http", "ui_http"):
            t0 = time.monotonic()
            method, path, normal = NORMAL[name]
            assert request(agent.ports[name], method, path)[0] == normal
            elapsed = time.monotonic() - t0
            print(f"{name}: {method} {path} in {elapsed * 1000:.1f} ms beside 200 idle "
                  f"connections")
            assert elapsed < 1.0, f"{name}: {elapsed:.3f}s with 200 idle connections"
        t0 = time.monotonic()
        assert _post_profiles(agent.ports["otlp_http"], _valid_request()) == 200
        assert time.monotonic() - t0 < 1.0
    finally:
        for s in socks:
            s.close()


def test_bodies_are_judged_by_their_declared_length(agent: AgentServers) -> None:
    port = agent.ports["otlp_http"]
    head = (f"POST {OTLP_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/x-protobuf\r\n")
    before = agent.refused()
    t0 = time.monotonic()   # 10 GB declared, nothing sent: refused at once
    assert raw_exchange(port, (head + "Content-Length: 10737418240\r\n\r\n").encode())[0] == 413
    assert time.monotonic() - t0 < 1.0
    assert raw_exchange(port, (head + "\r\n").encode())[0] == 411
    assert raw_exchange(port, (head + "Content-Length: -5\r\n\r\n").encode())[0] == 400
    assert raw_exchange(port, (head + "Transfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n0\r\n\r\n").encode())[0] == 501
    assert raw_exchange(port, (head + "X: " + "a" * 70_000 + "\r\n\r\n").encode())[0] == 431
    after = agent.refused()
    for reason in ("too_large", "no_length", "bad_request", "chunked", "header_too_large"):
        assert after.get(("otlp_http", reason), 0) > before.get(("otlp_http", reason), 0), reason
    assert _post_profiles(port, _valid_request()) == 200   # still serving


def test_grpc_caps_the_decompressed_message(agent: AgentServers) -> None:
    """``max_recv_msg_size_mib: 1``: 8 MiB of zeros travel gzipped as ~8 KB
    and are still refused; 512 KiB gzipped reach the handler."""
    target = f"127.0.0.1:{agent.ports['otlp_grpc']}"
    with grpc.insecure_channel(target, compression=grpc.Compression.Gzip) as ch:
        call = ch.unary_unary(EXPORT_METHOD, request_serializer=None,
                              response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            call(bytes(8 << 20), timeout=20)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as small:   # not a valid request, but read
            call(b"\x0a\x00" + bytes(512 << 10), timeout=20)
        assert small.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(call(_valid_request(), timeout=20)) == 0   # still serving


def test_grpc_caps_concurrent_rpcs() -> None:
    """``max_concurrent_streams: 2``: with two exports held in the pipeline,
    a third from another connection gets RESOURCE_EXHAUSTED at once (on the
    same connection HTTP/2's stream limit makes the client wait)."""
    release = threading.Event()

    class Holding:
        mutates_data = False

        def consume(self, profiles: object) -> None:
            release.wait(20)

    cfg = build_component_config(OTLP_FACTORY, {"protocols": {
        "grpc": {"endpoint": "127.0.0.1:0", "max_concurrent_streams": 2}}}, "receivers::otlp")
    rcv = OTLP_FACTORY.create(create_settings(Kind.RECEIVER, "otlp", Registry()), cfg, Holding())
    rcv.start(None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{rcv.grpc_port}") as ch, \
                concurrent.futures.ThreadPoolExecutor(2) as pool:
            call = ch.unary_unary(EXPORT_METHOD, request_serializer=None,
                                  response_deserializer=None)
            held = [pool.submit(call, _valid_request(), timeout=20) for _ in range(2)]
            time.sleep(1.0)
            with grpc.insecure_channel(f"127.0.0.1:{rcv.grpc_port}", options=[
                    ("grpc.use_local_subchannel_pool", 1)]) as other, \
                    pytest.raises(grpc.RpcError) as info:   # another client, another connection
                other.unary_unary(EXPORT_METHOD, request_serializer=None,
                                  response_deserializer=None)(_valid_request(), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            assert [len(f.result()) for f in held] == [0, 0]
            assert len(call(_valid_request(), timeout=5)) == 0
    finally:
        release.set()
        rcv.shutdown(2)


# -- timeouts and the connection cap, on a server with small ones -----------------
class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        reply(self, 200, "text/plain", b"hello")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply(self, 200, "text/plain", body[:10])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def small() -> Iterator[tuple[BackgroundHTTPServer, Registry]]:
    reg = Registry()
    refusals = Refusals(reg.for_component("test", "small"), logging.getLogger("test-small"))
    server = BackgroundHTTPServer(
        "127.0.0.1:0", _Hello, "test-small", refusals=refusals, source="small",
        limits=ServerLimits(max_connections=20, read_timeout=1.0, request_timeout=2.0,
                            max_body=1 << 20))
    server.start()
    yield server, reg
    server.stop()


def _closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def test_slow_heads_and_bodies_time_out(small: tuple[BackgroundHTTPServer, Registry]) -> None:
    server, reg = small
    port = server.port
    silent = socket.create_connection(("127.0.0.1", port))
    half_head = socket.create_connection(("127.0.0.1", port))
    half_head.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
    dribble = socket.create_connection(("127.0.0.1", port))   # a byte every 0.5 s
    half_body = socket.create_connection(("127.0.0.1", port))
    half_body.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nabc")
    t0 = time.monotonic()
    for i in range(8):
        try:
            dribble.sendall(b"G" if i == 0 else b"x")
        except OSError:    # closed by the server: what this test wants
            pass
        time.sleep(0.5)
        assert request(port, "GET", "/")[0] == 200    # served meanwhile
    for sock in (silent, half_head, dribble, half_body):
        closed, got = _closed_by_server(sock, 3.0)
        assert closed, "connection left open past its timeout"
        sock.close()
    assert time.monotonic() - t0 < 8.0
    key = 'refused_inputs{component="small",kind="test",reason="timeout",source="small"}'
    assert reg.snapshot()[key] == 3
    assert request(port, "POST", "/", body=b"0123456789abc")[1] == b"0123456789"


def test_connection_cap_drops_the_longest_silent(
        small: tuple[BackgroundHTTPServer, Registry]) -> None:
    server, reg = small
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        time.sleep(0.3)
        assert server.connections <= 20
        t0 = time.monotonic()
        assert request(server.port, "GET", "/")[0] == 200
        assert time.monotonic() - t0 < 1.0
        closed = sum(_closed_by_server(s, 0.05)[0] for s in idle[:20])
        assert closed >= 19        # the oldest were dropped for newer ones
        snap = reg.snapshot()
        key = 'refused_inputs{component="small",kind="test",reason="too_many_connections",' \
              'source="small"}'
        assert snap[key] >= 20
    finally:
        for s in idle:
            s.close()


def test_bodies_in_flight_are_bounded_in_all(
        small: tuple[BackgroundHTTPServer, Registry]) -> None:
    """Four clients declaring 1 MiB bodies and sending none hold the 4 MiB
    budget: a fifth body waits (503 + Retry-After); bodiless requests pass."""
    server, reg = small
    head = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n"
    holders = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for s in holders:
            s.sendall(head)
        time.sleep(0.2)
        assert raw_exchange(server.port, head)[0] == 503
        assert request(server.port, "GET", "/")[0] == 200
        key = 'refused_inputs{component="small",kind="test",reason="busy",source="small"}'
        assert reg.snapshot()[key] == 1
    finally:
        for s in holders:
            s.close()
    time.sleep(0.3)     # their reservations are given back when they go
    assert request(server.port, "POST", "/", body=bytes(1 << 20))[0] == 200


def test_requests_without_host(small: tuple[BackgroundHTTPServer, Registry]) -> None:
    """HTTP/1.1 requires Host (400 without); HTTP/1.0 clients may omit it (a
    browser never does, so no rebinding page can)."""
    server, _ = small
    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")[0] == 400
    assert raw_exchange(server.port, b"GET / HTTP/1.0\r\n\r\n") == (200, b"hello")
    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: localhost\r\n"
                                     b"\r\n")[0] == 400


def test_keep_alive_and_pipelining_still_work(
        small: tuple[BackgroundHTTPServer, Registry]) -> None:
    server, _ = small
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nxyz"
                  b"GET /c HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        closed, got = _closed_by_server(s, 5.0)
    assert closed
    assert got.count(b"HTTP/1.1 200") == 3 and b"xyz" in got


def test_ui_stays_on_loopback_unless_allowed(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="allow_remote"):
        build_component_config(UI_FACTORY, {"endpoint": "0.0.0.0:0"}, "extensions::ui")
    cfg = build_component_config(UI_FACTORY, {"endpoint": "0.0.0.0:0", "allow_remote": True,
                                              "allowed_hosts": ["profiler.example"]},
                                 "extensions::ui")
    ui = UI_FACTORY.create(create_settings(Kind.EXTENSION, "ui", Registry()), cfg, None)
    with caplog.at_level("WARNING"):
        ui.start(None)
    try:
        assert any("allow_remote" in r.getMessage() for r in caplog.records)
        port = ui.address[1]
        assert request(port, "GET", "/", host="profiler.example")[0] == 200
        assert request(port, "GET", "/", host=f"{socket.gethostname()}:{port}")[0] == 200
        assert request(port, "GET", "/", host="10.1.2.3")[0] == 200   # IP literals cannot rebind
        assert request(port, "GET", "/", host="attacker.example")[0] == 421
    finally:
        ui.shutdown()

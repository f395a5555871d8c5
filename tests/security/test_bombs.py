"""Decompression bombs at every place the agent inflates gzip (SECURITY.md,
"Decompression"): the OTLP HTTP receiver (``Content-Encoding: gzip``), OTLP
gRPC (gzip-compressed messages), pprof decoding (``pprof`` receiver files,
``ui`` directories) and the ``go`` scraper, each with 1 GiB of zeros gzipped
to ~1 MB and with a double-gzipped body (how one layer's limit is bypassed).
Memory is measured, not assumed: the real agent's VmHWM over its VmRSS
before the attack, or this process's after resetting its peak."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from telegen.component import Kind
from telegen.config import build_component_config
from telegen.exporters.otlp.exporter import EXPORT_METHOD
from telegen.extensions.ui.store import Catalog
from telegen.formats.otlp import encode_request
from telegen.formats.pprof import MAX_DECOMPRESSED, PprofError, decode, encode
from telegen.receivers.go.scraper import ScrapeError, Scraper
from telegen.receivers.pprof.factory import FACTORY as PPROF_FACTORY
from telegen.telemetry import Registry
from telegen.testing.hostile import (
    AgentServers,
    gzip_zeros,
    memory_kib,
    request,
    reset_peak,
    start_agent_servers,
)
from telegen.testing.pprof_checks import synthetic_profiles
from telegen.testing.settings import counter, create_settings
from telegen.testing.sink import Sink
from telegen.untrusted import MiB, Refusals

GiB = 1 << 30
OTLP_PATH = "/v1development/profiles"
AGENT_BUDGET_KIB = 50 * 1024         # the bound on the agent's growth
# An in-process inflate up to a cap costs the cap once at its peak:
# untrusted.gunzip asks zlib for 64 KiB pieces (asking for the whole cap in one
# call made zlib copy its output: 1 GiB bomb to pprof.decode, 64 MiB cap,
# +128 MB peak then, +67 MB now).
PEAK_FACTOR = 1
SLACK_KIB = 20 * 1024


def _inflate_budget_kib(cap: int) -> int:
    return PEAK_FACTOR * cap // 1024 + SLACK_KIB


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = gzip_zeros(GiB)
    assert len(data) < 2 * MiB
    return data


@pytest.fixture(scope="module")
def double_bomb() -> bytes:
    return gzip_zeros(GiB, layers=2)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServers]:
    a = start_agent_servers(tmp_path_factory.mktemp("bombs"), grpc_max_mib=4)
    yield a
    a.stop()


def _valid_request() -> bytes:
    return bytes(encode_request(synthetic_profiles()).SerializeToString())


def _post(agent: AgentServers, body: bytes, encoding: str = "") -> int:
    headers = {"Content-Type": "application/x-protobuf"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return request(agent.ports["otlp_http"], "POST", OTLP_PATH, body=body, headers=headers,
                   timeout=60)[0]


def _peak_growth_kib(pid: int, attack: object) -> tuple[int, dict[str, int]]:
    """Run ``attack()``; the peak RSS of ``pid`` over its RSS before."""
    reset_peak(pid)
    before = memory_kib(pid)
    attack()  # type: ignore[operator]
    after = memory_kib(pid)
    return after["VmHWM"] - before["VmRSS"], {"before_rss": before["VmRSS"], **after}


def test_otlp_http_gzip_bomb(agent: AgentServers, bomb: bytes, double_bomb: bytes) -> None:
    assert _post(agent, _valid_request()) == 200           # warm: imports and first parse done
    statuses: list[int] = []
    growth, mem = _peak_growth_kib(agent.proc.pid,
                                   lambda: statuses.append(_post(agent, bomb, "gzip")))
    print(f"1 GiB bomb ({len(bomb)} bytes) to OTLP/HTTP: {statuses}, agent {mem}, "
          f"peak growth {growth} KiB")
    assert statuses == [413]
    assert growth < AGENT_BUDGET_KIB, mem
    statuses.clear()
    growth, mem = _peak_growth_kib(agent.proc.pid,
                                   lambda: statuses.append(_post(agent, double_bomb, "gzip")))
    assert statuses == [400]
    assert growth < AGENT_BUDGET_KIB, mem
    for _ in range(2):
        assert _post(agent, bomb, "gzip") == 413
    refused = agent.refused()
    assert refused[("otlp_http", "decompressed_too_large")] == 3
    assert refused[("otlp_http", "nested_gzip")] == 1
    assert agent.log_text().count("refused otlp_http (decompressed_too_large)") == 1
    assert _post(agent, _valid_request()) == 200           # still serving
    assert agent.proc.poll() is None


def test_otlp_grpc_gzip_bomb(agent: AgentServers) -> None:
    """64 MiB of zeros in a gzip-compressed gRPC message (~64 KB on the wire)
    against ``max_recv_msg_size_mib: 4``: refused without inflating it all."""
    codes: list[grpc.StatusCode] = []

    def attack() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{agent.ports['otlp_grpc']}",
                                   compression=grpc.Compression.Gzip) as ch:
            call = ch.unary_unary(EXPORT_METHOD, request_serializer=None,
                                  response_deserializer=None)
            try:
                call(bytes(64 * MiB), timeout=60)
            except grpc.RpcError as exc:
                codes.append(exc.code())

    growth, mem = _peak_growth_kib(agent.proc.pid, attack)
    print(f"64 MiB gRPC gzip bomb: {codes}, agent {mem}, peak growth {growth} KiB")
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert growth < AGENT_BUDGET_KIB, mem
    assert _post(agent, _valid_request()) == 200


def _own_peak_growth(attack: object) -> int:
    return _peak_growth_kib(os.getpid(), attack)[0]


def test_pprof_decode_bomb(bomb: bytes, double_bomb: bytes) -> None:
    errors: list[PprofError] = []

    def attack(data: bytes) -> None:
        with pytest.raises(PprofError) as info:
            decode(data)
        errors.append(info.value)

    growth = _own_peak_growth(lambda: attack(bomb))
    print(f"1 GiB bomb to pprof.decode: peak growth {growth} KiB")
    assert errors[-1].reason == "decompressed_too_large"
    assert growth < _inflate_budget_kib(MAX_DECOMPRESSED)
    _own_peak_growth(lambda: attack(double_bomb))
    assert errors[-1].reason == "nested_gzip"
    good = encode(synthetic_profiles()[0])
    assert decode(good).name == synthetic_profiles()[0].name


def test_pprof_receiver_files(tmp_path: Path, bomb: bytes, double_bomb: bytes) -> None:
    (tmp_path / "bomb.pb.gz").write_bytes(bomb)
    (tmp_path / "double.pb.gz").write_bytes(double_bomb)
    (tmp_path / "good.pb.gz").write_bytes(encode(synthetic_profiles()[0]))
    reg, sink = Registry(), Sink()
    cfg = build_component_config(PPROF_FACTORY, {"paths": [str(tmp_path / "*.pb.gz")]},
                                 "receivers::pprof")
    rcv = PPROF_FACTORY.create(create_settings(Kind.RECEIVER, "pprof", reg), cfg, sink)
    growth = _own_peak_growth(lambda: rcv.scan(first=True))
    print(f"pprof receiver with two bombs: peak growth {growth} KiB")
    assert growth < _inflate_budget_kib(MAX_DECOMPRESSED)
    assert counter(reg, "receiver_refused_files") == 2
    assert len(sink.profiles()) == 1


def test_ui_directory_files(tmp_path: Path, bomb: bytes, double_bomb: bytes) -> None:
    (tmp_path / "bomb.pb.gz").write_bytes(bomb)
    (tmp_path / "double.pb.gz").write_bytes(double_bomb)
    (tmp_path / "good.pb.gz").write_bytes(encode(synthetic_profiles()[0]))
    os.symlink("/etc/shadow", tmp_path / "shadow.pb")
    reg = Registry()
    refusals = Refusals(reg.for_component("extension", "ui"), logging.getLogger("t"))
    catalog = Catalog(max_windows=10, directories=[str(tmp_path)], refusals=refusals)
    windows: list[object] = []
    growth = _own_peak_growth(lambda: windows.extend(catalog.windows(str(tmp_path))))
    assert growth < _inflate_budget_kib(MAX_DECOMPRESSED)
    assert [w.id for w in windows] == [str(tmp_path / "good.pb.gz")]  # type: ignore[attr-defined]
    assert catalog.dropped_files == 3
    assert refusals.counts == {("ui_directory", "decompressed_too_large"): 1,
                               ("ui_directory", "nested_gzip"): 1}


@pytest.fixture
def pprof_endpoint(bomb: bytes, double_bomb: bytes) -> Iterator[int]:
    bodies = {"/bomb": bomb, "/double": double_bomb,
              "/good": encode(synthetic_profiles()[0])}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_go_scraper_bombs(pprof_endpoint: int) -> None:
    reg = Registry()
    refusals = Refusals(reg.for_component("receiver", "go"), logging.getLogger("t"))
    limit = 16 * MiB
    scraper = Scraper(max_body_bytes=limit, refusals=refusals)
    base = f"http://127.0.0.1:{pprof_endpoint}"
    reasons: list[str] = []

    def attack(path: str) -> None:
        try:
            scraper.fetch_profile(base + path, 30)
        except ScrapeError as exc:
            reasons.append(exc.reason)

    for path in ("/bomb", "/double"):
        growth = _own_peak_growth(lambda path=path: attack(path))  # type: ignore[misc]
        print(f"go scraper {path}: peak growth {growth} KiB")
        assert growth < _inflate_budget_kib(limit)
    assert reasons == ["too_large", "nested_gzip"]     # the double gzip no longer slips by
    assert refusals.counts == {("go_scrape", "too_large"): 1, ("go_scrape", "nested_gzip"): 1}
    assert len(scraper.fetch_profile(base + "/good", 30)) > 0

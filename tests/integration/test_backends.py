"""Real agents (``python -m telegen``) shipping to real backends on loopback:
an OTLP gRPC server from the official protos and an HTTP server playing
Pyroscope. Windows are pprof files the test drops into a watched directory,
each tagged with a resource attribute ``window.id`` so the backend can count
every window exactly."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest

from telegen.exporters.otlp.exporter import EXPORT_METHOD
from telegen.formats.otlp import decode_request, encode_request
from telegen.formats.pprof import decode, encode
from telegen.pdata import Profile
from telegen.testing.agent import free_port, scrape, start_telegen, telegen, wait_until
from telegen.testing.backends import OtlpBackend, PyroscopeServer
from telegen.testing.goprog import go_pprof
from telegen.testing.otlp_checks import check_dictionary


def _window(src: Profile, incoming: Path, i: int) -> float:
    """Write window ``i`` atomically; returns when it was written (monotonic)."""
    p = src.copy()
    p.resource["window.id"] = i
    tmp = incoming / f".w{i:04d}.tmp"
    tmp.write_bytes(encode(p))
    os.replace(tmp, incoming / f"w{i:04d}.pb.gz")
    return time.monotonic()


def _window_ids(backend: OtlpBackend) -> Counter[int]:
    ids: Counter[int] = Counter()
    for req in backend.requests():
        for p in decode_request(req):
            ids[int(p.resource["window.id"])] += 1
    return ids


def _config(tmp: Path, incoming: Path, exporters: str, names: list[str], metrics: int,
            delete: bool = False) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
receivers:
  pprof:
    paths: ["{incoming}/*.pb.gz"]
    watch: true
    poll_interval: 100ms
    delete_after_read: {str(delete).lower()}
exporters:
{exporters}
service:
  telemetry:
    metrics: {{level: basic, address: "127.0.0.1:{metrics}"}}
  pipelines:
    profiles:
      receivers: [pprof]
      exporters: [{", ".join(names)}]
""")
    return cfg


def _otlp(name: str, port: int, extra: str = "") -> str:
    return f"""  {name}:
    endpoint: 127.0.0.1:{port}
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 500ms, max_interval: 2s, max_elapsed_time: 5m}}
{extra}"""


def _stop(agent: subprocess.Popen[bytes], log: Path) -> None:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(40)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def _stacks(profiles: list[Profile]) -> dict[tuple[str, tuple[str, ...]], list[int]]:
    """(type, function names leaf first) -> summed values."""
    out: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for p in profiles:
        for s in p:
            key = (p.name, tuple(n for f in s.stack for n in f.function_names()))
            have = out.setdefault(key, [0] * len(s.values))
            out[key] = [a + b for a, b in zip(have, s.values, strict=True)]
    return out


def test_otlp_export_matches_pprof_file_and_pyroscope_gets_pprof(
        go_profiles: Path, tmp_path: Path) -> None:
    backend = OtlpBackend().start()
    pyro = PyroscopeServer().start()
    out = tmp_path / "out"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
receivers:
  pprof:
    paths: ["{go_profiles}/*.pb.gz"]
exporters:
  pprof_file:
    directory: {out}
{_otlp("otlp", backend.port, "    service_name: cpuhog")}
  http/pyroscope:
    endpoint: http://127.0.0.1:{pyro.port}
    tenant_id: acme
service:
  pipelines:
    profiles:
      receivers: [pprof]
      exporters: [pprof_file, otlp, http/pyroscope]
""")
    try:
        proc = telegen("run", "-c", str(cfg), "--duration", "3")
    finally:
        backend.stop()
        pyro.stop()
    assert proc.returncode == 0, proc.stderr
    inputs = sorted(go_profiles.glob("*.pb.gz"))
    requests = backend.requests()
    assert len(requests) == len(inputs)          # one window per file, one request each
    for req in requests:
        check_dictionary(req)
        names = {kv.key: kv.value.string_value for rp in req.resource_profiles
                 for kv in rp.resource.attributes}
        assert names["service.name"] == "cpuhog"
    from_otlp = _stacks([p for req in requests for p in decode_request(req)])
    from_files = _stacks([decode(f.read_bytes()) for f in out.glob("*.pb.gz")])
    assert from_otlp == from_files and from_otlp
    # Pyroscope got every window as pprof that go tool pprof reads
    assert len(pyro.ingested) == len(inputs) and pyro.refused == []
    assert backend.findings == [] and backend.pyroscope_refusals == []
    for i, got in enumerate(pyro.ingested):
        assert got.path == "/ingest" and got.headers["x-scope-orgid"] == "acme"
        # as Pyroscope's Go client: multipart without format, the service name
        # alone before "{", the series picked by sample_type_config
        assert "format" not in got.query and got.query["from"] and got.query["until"]
        assert got.query["name"].split("{")[0] == "unknown_service"
        assert got.accepted is not None and got.accepted.series[0].split(":")[0] in (
            "process_cpu", "memory")
        f = tmp_path / f"pyro-{i}.pb.gz"
        f.write_bytes(got.profile)
        assert "Type:" in go_pprof("-top", str(f))


def test_dead_port_does_not_delay_the_other_exporter(go_profiles: Path,
                                                     tmp_path: Path) -> None:
    src = decode(sorted(go_profiles.glob("cpu-*.pb.gz"))[0].read_bytes())
    incoming = tmp_path / "in"
    incoming.mkdir()
    live = OtlpBackend().start()
    dead_port, metrics = free_port(), free_port()
    exporters = _otlp("otlp/dead", dead_port) + _otlp("otlp/live", live.port)
    cfg = _config(tmp_path, incoming, exporters, ["otlp/dead", "otlp/live"], metrics)
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    try:
        assert wait_until(lambda: "telegen_exporter_queue_size" in scrape(metrics), 30), \
            log.read_text()
        written = {}
        for i in range(10):
            time.sleep(0.5)
            written[i] = _window(src, incoming, i)
        assert wait_until(lambda: len(_window_ids(live)) == 10, 10), log.read_text()
        m = scrape(metrics)
    finally:
        _stop(agent, log)
        live.stop()
    ids = _window_ids(live)
    assert ids == Counter(range(10))
    arrival = {}
    for rec in live.received:
        for p in decode_request(rec.request):
            arrival[int(p.resource["window.id"])] = rec.at
    delays = [arrival[i] - written[i] for i in range(10)]
    print(f"live exporter delays per window: max {max(delays):.2f}s "
          f"mean {sum(delays) / len(delays):.2f}s")
    assert max(delays) < 2.0       # poll (100 ms) + stable check + send
    assert m["telegen_exporter_retries"] > 0        # the dead one kept retrying


def test_sigkill_with_queue_on_disk_then_restart_delivers(go_profiles: Path,
                                                          tmp_path: Path) -> None:
    src = decode(sorted(go_profiles.glob("cpu-*.pb.gz"))[0].read_bytes())
    incoming, storage = tmp_path / "in", tmp_path / "queue"
    incoming.mkdir()
    port, metrics = free_port(), free_port()
    extra = f"    sending_queue: {{storage: {storage}}}\n"
    cfg = _config(tmp_path, incoming, _otlp("otlp", port, extra), ["otlp"], metrics,
                  delete=True)
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    try:
        assert wait_until(lambda: "telegen_exporter_queue_size" in scrape(metrics), 30)
        for i in range(6):
            _window(src, incoming, i)
        assert wait_until(lambda: len(list((storage / "otlp").glob("*.req"))) == 6, 20), \
            log.read_text()
        assert not list(incoming.glob("*.pb.gz"))   # the receiver is done with them
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    backend = OtlpBackend(port).start()
    agent = start_telegen(["run", "-c", str(cfg)], tmp_path / "agent2.log")
    try:
        assert wait_until(lambda: len(_window_ids(backend)) == 6, 30), \
            (tmp_path / "agent2.log").read_text()
        assert wait_until(lambda: not list((storage / "otlp").glob("*.req")), 10)
        assert scrape(metrics)["telegen_exporter_requests_restored"] == 6
    finally:
        _stop(agent, tmp_path / "agent2.log")
        backend.stop()
    assert _window_ids(backend) == Counter(range(6))


def test_malformed_otlp_to_the_receiver_is_refused_and_agent_keeps_serving(
        tmp_path: Path) -> None:
    grpc_port, http_port, metrics = free_port(), free_port(), free_port()
    out = tmp_path / "out"
    cfg = tmp_path / "recv.yaml"
    cfg.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}
      http: {{endpoint: "127.0.0.1:{http_port}"}}
exporters:
  pprof_file: {{directory: {out}}}
service:
  telemetry:
    metrics: {{level: basic, address: "127.0.0.1:{metrics}"}}
  pipelines:
    profiles: {{receivers: [otlp], exporters: [pprof_file]}}
""")
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    try:
        assert wait_until(lambda: _listening(http_port), 30), log.read_text()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            call = ch.unary_unary(EXPORT_METHOD, request_serializer=None,
                                  response_deserializer=None)
            with pytest.raises(grpc.RpcError) as info:
                call(b"\x0a\xff\xff\xff garbage", timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            bad = urllib.request.Request(
                f"http://127.0.0.1:{http_port}/v1development/profiles", method="POST",
                data=gzip.compress(b"\x12\x05junk"),
                headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
            with pytest.raises(urllib.error.HTTPError) as http_info:
                urllib.request.urlopen(bad, timeout=5)
            assert http_info.value.code == 400
            assert scrape(metrics)["telegen_receiver_refused_requests"] == 2
            from telegen.testing.pprof_checks import synthetic_profiles
            call(encode_request(synthetic_profiles()).SerializeToString(), timeout=5)
        assert agent.poll() is None
        assert wait_until(lambda: len(list(out.glob("*.pb.gz"))) == 4, 10), log.read_text()
    finally:
        _stop(agent, log)
    assert agent.returncode == 0, log.read_text()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_backend_down_for_60s_every_window_arrives_exactly_once(go_profiles: Path,
                                                                tmp_path: Path) -> None:
    src = decode(sorted(go_profiles.glob("cpu-*.pb.gz"))[0].read_bytes())
    incoming = tmp_path / "in"
    incoming.mkdir()
    backend = OtlpBackend().start()
    metrics = free_port()
    cfg = _config(tmp_path, incoming, _otlp("otlp", backend.port), ["otlp"], metrics)
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    n = 0
    try:
        assert wait_until(lambda: "telegen_exporter_queue_size" in scrape(metrics), 30)
        for _ in range(4):                     # before the outage: 1 window / s
            _window(src, incoming, n)
            n += 1
            time.sleep(1)
        assert wait_until(lambda: len(_window_ids(backend)) == n, 10), log.read_text()
        backend.stop()
        down_at = time.monotonic()
        during = []
        while time.monotonic() - down_at < 60:  # the outage: 60 s, one window per 2 s
            _window(src, incoming, n)
            during.append(n)
            n += 1
            time.sleep(2)
        assert wait_until(lambda: scrape(metrics)["telegen_exporter_queue_size"] >= 25, 5)
        queued = scrape(metrics)["telegen_exporter_queue_size"]
        backend.start()                          # same port
        up_at = time.monotonic()
        for _ in range(3):                       # after: keeps flowing
            _window(src, incoming, n)
            n += 1
            time.sleep(1)
        assert wait_until(lambda: len(_window_ids(backend)) == n, 30), log.read_text()
        drained = time.monotonic() - up_at
        m = scrape(metrics)
    finally:
        _stop(agent, log)
        backend.stop()
    ids = _window_ids(backend)
    print(f"outage: {len(during)} windows during 60 s ({queued:.0f} queued at the end), "
          f"{n} windows in all, all delivered {drained:.1f}s after the restart")
    assert set(during) <= set(ids)
    assert ids == Counter(range(n))             # every window exactly once
    assert m["telegen_exporter_send_failed_samples"] == 0
    assert m["telegen_exporter_retries"] > 0

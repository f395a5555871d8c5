"""Exporter http against a real HTTP server playing Pyroscope /ingest."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from telegen.component import Kind
from telegen.config import build_component_config
from telegen.exporters.http.exporter import pyroscope_name
from telegen.exporters.http.factory import FACTORY
from telegen.formats.pprof import decode
from telegen.pdata import Profiles
from telegen.telemetry import Registry
from telegen.testing.agent import wait_until
from telegen.testing.backends import PyroscopeServer
from telegen.testing.pprof_checks import profile_state, synthetic_profiles
from telegen.testing.settings import counter, create_settings


@pytest.fixture
def server() -> Iterator[PyroscopeServer]:
    s = PyroscopeServer().start()
    yield s
    s.stop()


def _exporter(port: int, reg: Registry, **extra: object):  # type: ignore[no-untyped-def]
    raw = {"endpoint": f"http://127.0.0.1:{port}",
           "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms"}, **extra}
    cfg = build_component_config(FACTORY, raw, "exporters::http")
    exp = FACTORY.create(create_settings(Kind.EXPORTER, "http", reg), cfg, None)
    exp.start(None)
    return exp


def test_pyroscope_ingest_gets_pprof_and_parameters(server: PyroscopeServer) -> None:
    reg = Registry()
    exp = _exporter(server.port, reg, tenant_id="team-a", service_name="shop",
                    basic_auth={"username": "u", "password": "p"}, labels={"env": "test"})
    cpu = synthetic_profiles()[0]
    exp.consume(Profiles([cpu.copy()]))
    assert wait_until(lambda: len(server.ingested) == 1, 10)
    exp.shutdown(5)
    got = server.ingested[0]
    assert got.path == "/ingest"
    q = got.query
    assert q["name"] == ("shop.cpu{env=test,host_name=web-1,process_executable_name=app,"
                         "process_pid=4242}")
    assert q["from"] == str(cpu.start_ns // 10**9)
    assert q["until"] == str(cpu.end_ns // 10**9)
    assert q["format"] == "pprof" and q["spyName"] == "telegen"
    assert q["sampleRate"] == str(round(1e9 / cpu.period)) and q["units"] == "samples"
    assert q["aggregationType"] == "sum"
    assert got.headers["x-scope-orgid"] == "team-a"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert profile_state(decode(got.profile)) == profile_state(cpu)
    assert counter(reg, "exporter_sent_samples") == len(cpu)


def test_429_retry_after_is_honoured(server: PyroscopeServer) -> None:
    server.fail = lambda n: (429, {"Retry-After": "1"}) if n == 1 else None
    reg = Registry()
    exp = _exporter(server.port, reg, bearer_token="tok")
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: len(server.ingested) == 1, 10)
    exp.shutdown(5)
    assert server.attempts[1] - server.attempts[0] >= 1.0
    assert server.ingested[0].headers["authorization"] == "Bearer tok"
    assert counter(reg, "exporter_retries") == 1


def test_5xx_retries_and_4xx_is_permanent(server: PyroscopeServer) -> None:
    server.fail = lambda n: (503, {}) if n <= 2 else (400, {}) if n == 4 else None
    reg = Registry()
    exp = _exporter(server.port, reg, sending_queue={"num_consumers": 1})
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: len(server.ingested) == 1, 10)
    exp.consume(Profiles(synthetic_profiles()[1:2]))
    assert wait_until(lambda: counter(reg, "exporter_send_failed_samples") > 0, 10)
    exp.shutdown(5)
    assert len(server.attempts) == 4 and counter(reg, "exporter_retries") == 2


def test_generic_mode_posts_one_gzipped_pprof_per_type(server: PyroscopeServer) -> None:
    reg = Registry()
    exp = _exporter(server.port, reg, mode="generic", headers={"X-Key": "k"})
    profiles = synthetic_profiles()
    exp.consume(Profiles(p.copy() for p in profiles))
    assert wait_until(lambda: len(server.ingested) == len(profiles), 10)
    exp.shutdown(5)
    for got in server.ingested:
        assert got.profile[:2] == b"\x1f\x8b" and got.headers["x-key"] == "k"
    names = sorted(decode(g.profile).name for g in server.ingested)
    assert names == sorted(p.name for p in profiles)


def test_dead_server_is_retryable(server: PyroscopeServer) -> None:
    reg = Registry()
    port = server.port
    server.stop()
    exp = _exporter(port, reg, retry_on_failure={"initial_interval": "20ms",
                                                 "max_interval": "20ms",
                                                 "max_elapsed_time": "300ms"})
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: counter(reg, "exporter_send_failed_samples") > 0, 10)
    exp.shutdown(1)
    assert counter(reg, "exporter_retries") >= 3


def test_name_labels_are_sanitized() -> None:
    p = synthetic_profiles()[1]
    p.resource["weird key"] = "a,b=c"
    assert pyroscope_name("app", p, {}) == "app.off_cpu{host_name=web-1,weird_key=a_b_c}"

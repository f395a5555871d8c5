"""Exporter http against a real HTTP server playing Pyroscope /ingest with the
real handler's parsing and answers (telegen.testing.pyroscope_ingest)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from telegen.component import ConfigError, Kind
from telegen.config import build_component_config
from telegen.exporters.http import pyroscope
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
    assert server.refused == []
    got = server.ingested[0]
    assert got.path == "/ingest"
    q = got.query
    # no pid, no command line: the default label set only
    assert q["name"] == "shop{env=test,host_name=web-1,process_executable_name=app}"
    assert "format" not in q        # format=pprof would make Pyroscope read the form as pprof
    assert q["from"] == str(cpu.start_ns // 10**9)
    assert q["until"] == str(cpu.end_ns // 10**9)
    assert q["spyName"] == "telegen" and q["sampleRate"] == str(round(1e9 / cpu.period))
    assert got.headers["x-scope-orgid"] == "team-a"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert got.accepted is not None and got.accepted.service_name == "shop"
    assert got.accepted.series == ["process_cpu:samples:count:cpu:nanoseconds",
                                   "process_cpu:cpu:nanoseconds:cpu:nanoseconds"]
    assert profile_state(decode(got.profile)) == profile_state(cpu)
    assert counter(reg, "exporter_sent_samples") == len(cpu)


def test_derived_service_name_is_made_valid_for_pyroscope(server: PyroscopeServer) -> None:
    """The service is named after the executable when the process names none;
    a ':' in it is refused by Pyroscope's name validation (400): made '_'."""
    reg = Registry()
    exp = _exporter(server.port, reg)
    cpu = synthetic_profiles()[0]
    cpu.resource["process.executable.name"] = "app:v2"
    exp.consume(Profiles([cpu]))
    assert wait_until(lambda: len(server.ingested) == 1, 10)
    exp.shutdown(5)
    assert server.refused == []
    accepted = server.ingested[0].accepted
    assert accepted is not None and accepted.service_name == "app_v2"


def test_label_limits_hold(server: PyroscopeServer) -> None:
    """Pyroscope allows 30 label names per series (4 its own); more is a 422."""
    reg = Registry()
    p = synthetic_profiles()[0]
    for i in range(40):
        p.resource[f"custom.attr{i}"] = "v" * 3000
    allow = [f"custom.attr{i}" for i in range(40)]
    exp = _exporter(server.port, reg, service_name="shop", resource_to_labels=allow)
    exp.consume(Profiles([p]))
    assert wait_until(lambda: len(server.ingested) == 1, 10)
    exp.shutdown(5)
    assert server.refused == []
    name = server.ingested[0].query["name"]
    sample_keys = pyroscope.sample_label_names(p)
    assert name.count("=") == pyroscope.MAX_OWN_LABELS - len(sample_keys) and sample_keys
    assert max(len(kv) for kv in name.split(",")) < 2048 + 40


@pytest.mark.parametrize("bad", [{"service_name": "unknown_service:app"},
                                 {"labels": {"process.pid": "1"}},
                                 {"labels": {"env": "a,b"}},
                                 {"labels": {f"l{i}": "v" for i in range(27)}}])
def test_config_refuses_what_pyroscope_would(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_component_config(FACTORY, {"endpoint": "http://127.0.0.1:4040", **bad},
                               "exporters::http")


@pytest.mark.parametrize(("status", "body", "retried"), [
    (422, '{"code":"unknown","message":"pushing IngestInput-pprof failed push series with '
          'index 0 and id  failed: unavailable: no healthy ingesters"}', True),
    (422, '{"code":"unknown","message":"pushing IngestInput-pprof failed push series with '
          'index 0 and id  failed: invalid_argument: sample value length mismatch"}', False),
    (408, '{"code":"deadline_exceeded","message":"failed to read request body"}', True),
    (413, '{"code":"unknown","message":"request body too large"}', False),
])
def test_retry_classes_follow_pyroscope_answers(status: int, body: str, retried: bool) -> None:
    from telegen.component import PermanentError
    from telegen.helpers.exporterhelper import RetryableError

    err = pyroscope.classify(status, body, None, "x")
    assert isinstance(err, RetryableError if retried else PermanentError)


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
    p.resource["weird key"] = "a,b}c"
    labels = pyroscope.series_labels(p.resource, ["host.name", "weird key"], {})
    assert pyroscope.ingest_name("app", labels) == "app{host_name=web-1,weird_key=a_b_c}"


def test_a_window_beyond_pyroscopes_limits_goes_in_pieces(server: PyroscopeServer) -> None:
    """Pyroscope refuses (422, permanent) a profile of more than 16000 samples
    or 4 MiB: the window goes as disjoint pieces that land in one series."""
    from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, ValueType, make_labels

    frame = Frame(FrameKind.NATIVE, 0x10, None, (Line("f", "/src/f.c", 1),))
    p = Profile(name="cpu", sample_types=CPU, period_type=ValueType("cpu", "nanoseconds"),
                period=10, start_ns=1_700_000_000 * 10**9, duration_ns=10**10,
                resource={"host.name": "h"})
    for i in range(40_000):
        p.add((frame,), [1, 10], make_labels(n=i))
    reg = Registry()
    exp = _exporter(server.port, reg, service_name="shop")
    exp.consume(Profiles([p]))
    assert wait_until(lambda: len(server.ingested) == 3, 20)
    exp.shutdown(5)
    assert server.refused == []
    assert sum(i.accepted.samples for i in server.ingested if i.accepted) == 40_000
    assert {tuple(i.accepted.series) for i in server.ingested if i.accepted} == {
        ("process_cpu:samples:count:cpu:nanoseconds",
         "process_cpu:cpu:nanoseconds:cpu:nanoseconds")}
    assert counter(reg, "exporter_sent_samples") == 40_000

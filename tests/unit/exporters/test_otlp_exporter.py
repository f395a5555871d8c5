"""Exporter otlp against a real gRPC ProfilesService server (official protos)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from telegen.component import Kind
from telegen.config import build_component_config
from telegen.exporters.otlp.factory import FACTORY
from telegen.exporters.otlp_grpc.factory import FACTORY as ALIAS
from telegen.formats.otlp import decode_request
from telegen.pdata import Profiles
from telegen.telemetry import Registry
from telegen.testing.agent import wait_until
from telegen.testing.backends import Failure, OtlpBackend
from telegen.testing.pprof_checks import profile_state, synthetic_profiles
from telegen.testing.settings import counter, create_settings


@pytest.fixture
def backend() -> Iterator[OtlpBackend]:
    b = OtlpBackend().start()
    yield b
    b.stop()


def _exporter(port: int, reg: Registry, type_: str = "otlp", **extra: object):  # type: ignore[no-untyped-def]
    factory = FACTORY if type_ == "otlp" else ALIAS
    raw = {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True},
           "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms"}, **extra}
    cfg = build_component_config(factory, raw, f"exporters::{type_}")
    exp = factory.create(create_settings(Kind.EXPORTER, type_, reg), cfg, None)
    exp.start(None)
    return exp


@pytest.mark.parametrize("type_", ["otlp", "otlp_grpc"])
def test_export_arrives_intact_with_headers(backend: OtlpBackend, type_: str) -> None:
    reg = Registry()
    exp = _exporter(backend.port, reg, type_, headers={"Authorization": "Bearer s3cret"},
                    service_name="shop")
    profiles = synthetic_profiles()
    exp.consume(Profiles(p.copy() for p in profiles))
    assert wait_until(lambda: len(backend.requests()) == 1, 10)
    exp.shutdown(5)
    got = decode_request(backend.requests()[0])
    for a, b in zip(profiles, got, strict=True):
        b.resource.pop("service.name")
        assert profile_state(b) == profile_state(a)
    assert backend.received[0].metadata["authorization"] == "Bearer s3cret"
    assert counter(reg, "exporter_sent_samples") == sum(len(p) for p in profiles)


def test_unavailable_is_retried(backend: OtlpBackend) -> None:
    backend.failures.append(Failure(grpc.StatusCode.UNAVAILABLE, 2))
    reg = Registry()
    exp = _exporter(backend.port, reg)
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: len(backend.requests()) == 1, 10)
    exp.shutdown(5)
    assert len(backend.attempts) == 3 and counter(reg, "exporter_retries") == 2


def test_resource_exhausted_retries_only_with_retry_info(backend: OtlpBackend) -> None:
    backend.failures.append(Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, 1, delay_s=0.7))
    reg = Registry()
    exp = _exporter(backend.port, reg)
    exp.consume(Profiles(synthetic_profiles()[:1]))   # throttled once, then delivered
    assert wait_until(lambda: len(backend.requests()) == 1, 10)
    assert backend.attempts[1] - backend.attempts[0] >= 0.7
    backend.failures.append(Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, 1))
    exp.consume(Profiles(synthetic_profiles()[1:2]))  # no RetryInfo: permanent
    assert wait_until(lambda: counter(reg, "exporter_send_failed_samples") > 0, 10)
    time.sleep(0.3)
    exp.shutdown(5)
    assert len(backend.attempts) == 3
    assert counter(reg, "exporter_send_failed_samples") == len(synthetic_profiles()[1])


def test_invalid_argument_is_permanent_and_partial_success_counted(
        backend: OtlpBackend) -> None:
    backend.failures.append(Failure(grpc.StatusCode.INVALID_ARGUMENT, 1))
    reg = Registry()
    exp = _exporter(backend.port, reg)
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: counter(reg, "exporter_send_failed_samples") > 0, 10)
    backend.partial_rejected = 2
    exp.consume(Profiles(synthetic_profiles()[:1]))
    assert wait_until(lambda: counter(reg, "exporter_partial_success_rejected_profiles") == 2,
                      10)
    exp.shutdown(5)
    assert counter(reg, "exporter_retries") == 0


def test_config_requires_endpoint_and_checks_tls_pairs() -> None:
    from telegen.component import ConfigError

    with pytest.raises(ConfigError, match='missing required key "endpoint"'):
        build_component_config(FACTORY, {}, "exporters::otlp")
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        build_component_config(FACTORY, {"endpoint": "x:1", "tls": {"cert_file": "c.pem"}},
                               "exporters::otlp")
    cfg = build_component_config(FACTORY, {"endpoint": "http://collector:4317"}, "e")
    assert cfg.target() == ("collector:4317", False)
    assert build_component_config(FACTORY, {"endpoint": "collector:4317"}, "e").target() == (
        "collector:4317", True)

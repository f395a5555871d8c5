"""Every profile type telegen emits, exported over OTLP with the ``otlp``
exporter, timestamps off and on, checked by receivers' own rules:

* the ``profcheck`` port (telegen/testing/profcheck.py, from
  open-telemetry/sig-profiling profcheck/check.go), run by the fake backend
  on every request: zero findings, or the backend refuses the export;
* Pyroscope's OTLP converter (telegen/testing/pyroscope_otlp.py, from
  grafana/pyroscope pkg/ingester/otlp/convert.go and ingest_handler.go): no
  request refused, and each type lands in the series named below — written
  by hand from that converter's naming rule (``samples:count`` with a cpu
  period is process_cpu, ``off_cpu:nanoseconds`` without a period is off_cpu,
  anything else is named after its period type)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telegen.component import Kind
from telegen.config import build_component_config
from telegen.exporters.otlp.factory import FACTORY
from telegen.formats.otlp import decode_request
from telegen.pdata import Profiles
from telegen.telemetry import Registry
from telegen.testing.agent import wait_until
from telegen.testing.backends import OtlpBackend
from telegen.testing.profile_catalog import every_type
from telegen.testing.pyroscope_otlp import convert
from telegen.testing.settings import create_settings

CPU = ["process_cpu:cpu:nanoseconds:cpu:nanoseconds"]
ALLOC = ["memory:alloc_objects:count:memory:bytes", "memory:alloc_space:bytes:memory:bytes"]
INUSE = ["memory:inuse_objects:count:memory:bytes", "memory:inuse_space:bytes:memory:bytes"]
MUTEX = ["mutex:contentions:count:mutex:count", "mutex:delay:nanoseconds:mutex:count"]
BLOCK = ["block:contentions:count:block:count", "block:delay:nanoseconds:block:count"]
EXPECTED = {
    "ebpf/cpu": CPU,
    "ebpf/off_cpu": ["off_cpu:samples:count:off_cpu:nanoseconds", "off_cpu:off_cpu:nanoseconds::"],
    "ebpf/alloc": ALLOC, "ebpf/inuse": INUSE, "ebpf/mutex": MUTEX,
    "go/cpu": CPU, "go/alloc": ALLOC, "go/inuse": INUSE, "go/mutex": MUTEX, "go/block": BLOCK,
    "go/goroutine": ["goroutine:goroutine:count:goroutine:count"],
    "jfr/cpu": CPU, "jfr/alloc": ALLOC, "jfr/mutex": MUTEX, "jfr/park": BLOCK,
    "jfr/gc": ["gc:gc:count:gc:count", "gc:pause:nanoseconds:gc:count"],
    "python/cpu": CPU, "python/wall": ["wall:samples:count:wall:nanoseconds"],
}
PRODUCER = {"checkout": "go", "orders": "jfr", "web": "python"}


@pytest.fixture
def backend() -> Iterator[OtlpBackend]:
    b = OtlpBackend().start()
    yield b
    b.stop()


@pytest.mark.parametrize("timestamps", [False, True])
def test_every_type_passes_profcheck_and_lands_in_pyroscopes_series(
        backend: OtlpBackend, timestamps: bool) -> None:
    catalog = every_type(timestamps)
    raw = {"endpoint": f"127.0.0.1:{backend.port}", "tls": {"insecure": True}}
    cfg = build_component_config(FACTORY, raw, "exporters::otlp")
    exp = FACTORY.create(create_settings(Kind.EXPORTER, "otlp", Registry()), cfg, None)
    exp.start(None)
    for p in catalog.values():                   # one request per profile
        exp.consume(Profiles([p.copy()]))
    assert wait_until(lambda: len(backend.requests()) == len(catalog), 20)
    exp.shutdown(5)
    assert backend.findings == [] and backend.pyroscope_refusals == []
    got: dict[str, list[str]] = {}
    for req in backend.requests():
        (p,) = decode_request(req)
        producer = PRODUCER.get(str(p.resource.get("service.name")), "ebpf")
        series = convert(req)
        got[f"{producer}/{p.name}"] = [s.profile_type for s in series]
        # Pyroscope's totals: CPU time is count x period, off-CPU time summed
        original = catalog[f"{producer}/{p.name}"]
        if series[0].profile_type.startswith("process_cpu"):
            assert series[0].total == original.totals()[0] * original.period
        if p.name == "off_cpu":
            assert series[-1].total == original.totals()[1]
    assert got == EXPECTED
    for producer in ("ebpf", "go", "jfr", "python"):   # nothing stored twice
        mine = [s for k, v in got.items() if k.startswith(producer) for s in v]
        assert len(mine) == len(set(mine)), producer


def test_a_non_conformant_request_is_refused_by_the_backend(backend: OtlpBackend) -> None:
    """The profcheck hook is live: a request with a 15-byte trace id is refused."""
    import grpc

    from telegen.exporters.otlp.exporter import EXPORT_METHOD
    from telegen.formats.otlp import encode_request

    req = encode_request(list(every_type().values())[:1])
    req.dictionary.link_table.add(trace_id=b"x" * 15, span_id=b"y" * 8)
    with grpc.insecure_channel(f"127.0.0.1:{backend.port}") as ch:
        call = ch.unary_unary(EXPORT_METHOD, request_serializer=None,
                              response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(req.SerializeToString(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any("trace_id" in f for f in backend.findings)

"""Every profile type telegen emits, through the ``http`` exporter, into a
stand-in that parses ``/ingest`` as Pyroscope's handler does
(telegen/testing/pyroscope_ingest.py: grafana/pyroscope
pkg/ingester/pyroscope/ingest_handler.go, pkg/og/convert/pprof/profile.go,
api/model/labelset, pkg/validation/validate.go, pkg/model/pprofsplit,
pkg/phlaredb/labels/labels.go).

The expected series are the ones Pyroscope's own clients produce for each
kind of data (pyroscope-go for cpu, memory, mutex, block, goroutines; the
Python and JFR integrations for wall and gc), written out here by hand from
those conventions, not computed by telegen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from telegen.component import Kind
from telegen.config import build_component_config
from telegen.exporters.http.factory import FACTORY
from telegen.formats.pprof import decode
from telegen.pdata import Profiles
from telegen.telemetry import Registry
from telegen.testing.agent import wait_until
from telegen.testing.backends import PyroscopeServer
from telegen.testing.profile_catalog import every_type
from telegen.testing.settings import counter, create_settings

CPU = ["process_cpu:samples:count:cpu:nanoseconds", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"]
ALLOC = ["memory:alloc_objects:count:space:bytes", "memory:alloc_space:bytes:space:bytes"]
INUSE = ["memory:inuse_objects:count:space:bytes", "memory:inuse_space:bytes:space:bytes"]
MUTEX = ["mutex:contentions:count:contentions:count", "mutex:delay:nanoseconds:contentions:count"]
BLOCK = ["block:contentions:count:contentions:count", "block:delay:nanoseconds:contentions:count"]
EXPECTED = {
    "ebpf/cpu": CPU,
    # every sample type containing "cpu" is named process_cpu by Pyroscope's
    # /ingest; the off_cpu sample type keeps off-CPU time apart from CPU time
    "ebpf/off_cpu": ["process_cpu:off_cpu:nanoseconds:off_cpu:nanoseconds"],
    "ebpf/alloc": ALLOC, "ebpf/inuse": INUSE, "ebpf/mutex": MUTEX,
    "go/cpu": CPU, "go/alloc": ALLOC, "go/inuse": INUSE, "go/mutex": MUTEX, "go/block": BLOCK,
    "go/goroutine": ["goroutines:goroutine:count:goroutine:count"],
    "jfr/cpu": CPU, "jfr/alloc": ALLOC, "jfr/mutex": MUTEX, "jfr/park": BLOCK,
    "jfr/gc": ["gc:gc:count:gc:count", "gc:pause:nanoseconds:gc:count"],
    "python/cpu": CPU,
    "python/wall": ["wall:samples:count:wall:nanoseconds",
                    "wall:wall:nanoseconds:wall:nanoseconds"],
}


@pytest.fixture
def server() -> Iterator[PyroscopeServer]:
    s = PyroscopeServer().start()
    yield s
    s.stop()


def _send(server: PyroscopeServer, profiles: list, **extra: object) -> Registry:  # type: ignore[type-arg]
    reg = Registry()
    raw = {"endpoint": f"http://127.0.0.1:{server.port}", **extra}
    cfg = build_component_config(FACTORY, raw, "exporters::http")
    exp = FACTORY.create(create_settings(Kind.EXPORTER, "http", reg), cfg, None)
    exp.start(None)
    exp.consume(Profiles(p.copy() for p in profiles))
    assert wait_until(lambda: len(server.ingested) + len(server.refused) >= len(profiles), 20)
    exp.shutdown(5)
    return reg


def test_catalog_covers_every_type() -> None:
    assert sorted(every_type()) == sorted(EXPECTED)


@pytest.mark.parametrize("timestamps", [False, True])
def test_every_type_lands_in_pyroscopes_series(server: PyroscopeServer,
                                               timestamps: bool) -> None:
    catalog = every_type(timestamps)
    names = list(catalog)
    reg = _send(server, list(catalog.values()), service_name="shop", labels={"env": "prod"})
    assert server.refused == []
    assert len(server.ingested) == len(names)            # one request per profile
    assert counter(reg, "exporter_sent_samples") == sum(len(p) for p in catalog.values())
    got: dict[str, list[str]] = {}
    for ingest in server.ingested:
        accepted = ingest.accepted
        assert accepted is not None and accepted.service_name == "shop"
        for labels in accepted.labels:
            assert labels["env"] == "prod"
            assert not {"process_pid", "process_command_line"} & set(labels)
        name = decode(ingest.profile).name
        producer = {"checkout": "go", "orders": "jfr", "web": "python"}.get(
            str(decode(ingest.profile).resource.get("service.name")), "ebpf")
        got[f"{producer}/{name}"] = accepted.series
    assert got == EXPECTED
    # nothing sent twice: no two profiles of one producer share a series
    for producer in ("ebpf", "go", "jfr", "python"):
        mine = [s for k, v in got.items() if k.startswith(producer) for s in v]
        assert len(mine) == len(set(mine)), producer


def test_derived_service_names_are_accepted(server: PyroscopeServer) -> None:
    catalog = every_type()
    _send(server, list(catalog.values()))
    assert server.refused == []
    services = {i.accepted.service_name for i in server.ingested if i.accepted}
    assert services == {"app", "checkout", "orders", "web"}   # app: the executable's name


def test_the_stand_in_refuses_what_pyroscope_refuses(server: PyroscopeServer) -> None:
    """The old request shape: format=pprof with a multipart body: 422."""
    import urllib.error
    import urllib.request

    from telegen.exporters.http.exporter import multipart
    from telegen.formats.pprof import encode

    body, ctype = multipart([("profile", "profile.pprof", encode(every_type()["ebpf/cpu"]))])
    for query, status in (("name=app.cpu%7B%7D&format=pprof", 422),
                          ("name=unknown_service:app%7B%7D", 400),
                          ("name=app%7Bprocess-pid%3D1%7D", 400)):
        req = urllib.request.Request(f"http://127.0.0.1:{server.port}/ingest?{query}",
                                     data=body, headers={"Content-Type": ctype}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == status, query

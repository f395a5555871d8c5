"""The receiver's scheduling, failure handling and deltas against fake pprof
servers on loopback (real HTTP, synthetic profiles)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import FakeServer, mutex_profile

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profiles
from telegen.receivers.go.config import GoReceiverConfig
from telegen.receivers.go.receiver import GoReceiver
from telegen.telemetry import Registry
from telegen.testing.agent import free_port, wait_until
from telegen.testing.sink import Sink

S = 1_000_000_000
LOGGER = "go-unit"


def make(sink: Any, reg: Registry, **cfg: Any) -> GoReceiver:
    config = GoReceiverConfig(**{"cpu": False, "interval": 1.0, **cfg})
    config.validate()
    settings = CreateSettings(ComponentID("go"), Kind.RECEIVER,
                              reg.for_component("receiver", "go"), logging.getLogger(LOGGER))
    return GoReceiver(settings, config, sink)


def count(reg: Registry, name: str, **labels: str) -> float:
    body = ",".join(f'{k}="{v}"' for k, v in sorted({"component": "go", "kind": "receiver",
                                                      **labels}.items()))
    return reg.snapshot().get(f"{name}{{{body}}}", 0)


def equals(get: Callable[[], float], want: float) -> Callable[[], bool]:
    return lambda: get() == want


def tick(rx: GoReceiver) -> None:
    """One interval, by hand: submit the scrapes and wait until they are done."""
    rx.tick()
    assert wait_until(lambda: rx.in_flight() == 0, 5, 0.01)


def target(server: FakeServer | str) -> dict[str, str]:
    return {"endpoint": server if isinstance(server, str) else server.endpoint}


def test_failures_are_counted_logged_once_and_retried(fake_server: FakeServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    sink, reg = Sink(), Registry()
    fake_server.routes["/debug/pprof/mutex"] = lambda: (200, b"<html>not a profile</html>")
    dead = f"127.0.0.1:{free_port()}"
    rx = make(sink, reg, targets=[target(fake_server), target(dead)], mutex=True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        try:
            for n in (1, 2, 3):            # every interval tries again
                tick(rx)
                assert wait_until(equals(lambda: count(reg, "go_scrape_errors", reason="not_pprof")
                                         + count(reg, "go_scrape_errors", reason="down"), 2 * n),
                                  5)
                assert count(reg, "go_scrape_errors", reason="down") == n
            fake_server.serve_profile("mutex", lambda: mutex_profile({"main.a": S}))
            for n in (1, 2):
                tick(rx)
                assert wait_until(equals(lambda: count(reg, "go_scrapes", profile="mutex"), n), 5)
        finally:
            rx.shutdown()
    text = [r.getMessage() for r in caplog.records]
    assert sum("failed (not_pprof" in m and fake_server.endpoint in m for m in text) == 1, text
    assert sum("failed (down" in m and dead in m for m in text) == 1, text
    assert sum("works again" in m and fake_server.endpoint in m for m in text) == 1, text


def test_a_slow_target_does_not_delay_the_others(make_server: Callable[[], FakeServer]
                                                 ) -> None:
    slow, fast = make_server(), make_server()
    slow.hang("goroutine")
    arrivals: list[float] = []

    class Timed(Sink):
        def consume(self, profiles: Profiles) -> None:
            arrivals.append(time.monotonic())
            super().consume(profiles)

    fast.serve_profile("goroutine", lambda: mutex_profile({"main.parked": 7}))
    sink, reg = Timed(), Registry()
    rx = make(sink, reg, targets=[target(slow), target(fast)], goroutine=True,
              timeout=1.0, max_concurrency=2)
    try:
        for n in (1, 2, 3):
            ticked = time.monotonic()
            rx.tick()
            assert wait_until(equals(lambda: len(arrivals), n), 5)
            assert arrivals[-1] - ticked < 0.5        # not held up by the slow one
            assert wait_until(lambda: rx.in_flight() == 1, 5, 0.01)   # only the slow one
        # the slow one holds one worker and is skipped while still busy ...
        assert count(reg, "go_scrape_skipped", lane="snapshot") == 2
        # ... until its own deadline passes
        assert wait_until(lambda: count(reg, "go_scrape_errors", reason="timeout") == 1, 5)
    finally:
        rx.shutdown()
    assert {p.resource["telegen.target"] for p in sink.profiles()} == {
        f"http://{fast.endpoint}/debug/pprof"}


def test_cumulative_profiles_become_deltas_and_restarts_reset(fake_server: FakeServer) -> None:
    readings = iter([10, 12, 15, 1, 4, 9] + [9] * 50)    # restarted after 15
    current = {"v": 0}

    def next_profile() -> Any:
        current["v"] = next(readings)
        return mutex_profile({"main.hold": current["v"] * S})

    fake_server.serve_profile("mutex", next_profile)
    sink, reg = Sink(), Registry()
    rx = make(sink, reg, targets=[target(fake_server)], mutex=True)
    try:
        for n in range(6):
            tick(rx)
            assert wait_until(equals(lambda: count(reg, "go_scrapes", profile="mutex"), n + 1), 5)
    finally:
        rx.shutdown()
    got = [p.totals()[1] // S for p in sink.profiles("mutex")][:5]
    assert got == [2, 3, 1, 3, 5]            # 12-10, 15-12, restart: 1, 4-1, 9-4
    assert count(reg, "go_delta_resets") == 1
    for p in sink.profiles():
        assert p.resource["telegen.target"] == f"http://{fake_server.endpoint}/debug/pprof"
        assert all(v >= 0 for s in p for v in s.values)


def test_shutdown_does_not_wait_for_cpu_windows(fake_server: FakeServer) -> None:
    fake_server.hang("profile")
    sink, reg = Sink(), Registry()
    rx = make(sink, reg, targets=[target(fake_server)], cpu=True, interval=10.0)
    rx.start(None)  # type: ignore[arg-type]
    assert wait_until(lambda: any("/profile?seconds=9" in r for r in fake_server.requests), 5)
    started = time.monotonic()
    rx.shutdown()
    assert time.monotonic() - started < 2
    assert sink.batches == [] and count(reg, "go_scrape_errors", reason="down") == 0


def test_a_refusing_consumer_is_counted_and_scraping_goes_on(fake_server: FakeServer) -> None:
    fake_server.serve_profile("goroutine", lambda: mutex_profile({"main.parked": 3}))

    class Refusing:
        mutates_data = False
        calls = 0

        def consume(self, profiles: Profiles) -> None:
            Refusing.calls += 1
            raise RuntimeError("queue full")

    reg = Registry()
    rx = make(Refusing(), reg, targets=[target(fake_server)], goroutine=True)
    try:
        for n in (1, 2):
            tick(rx)
            assert wait_until(equals(lambda: Refusing.calls, n), 5)
    finally:
        rx.shutdown()
    assert count(reg, "receiver_refused_samples") >= 2
    assert count(reg, "go_scrapes", profile="goroutine") >= 2

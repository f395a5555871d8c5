"""Scraper: every failure has its reason; limits hold; close() aborts."""

from __future__ import annotations

import gzip
import threading
import time

import pytest
from conftest import FakeServer, mutex_profile

from telegen.receivers.go.scraper import Aborted, ScrapeError, Scraper
from telegen.testing.agent import free_port

MUTEX = "/debug/pprof/mutex"


def url(server: FakeServer, path: str = MUTEX) -> str:
    return f"http://{server.endpoint}{path}"


def reason(scraper: Scraper, target: str, timeout: float = 2.0) -> str:
    with pytest.raises(ScrapeError) as info:
        scraper.fetch_profile(target, timeout)
    return info.value.reason


def test_good_profile(fake_server: FakeServer) -> None:
    fake_server.serve_profile("mutex", lambda: mutex_profile({"main.a": 5}))
    p = Scraper(max_body_bytes=1 << 20).fetch_profile(url(fake_server), 2.0)
    assert [s.stack[1].name for s in p] == ["main.a"] and p.totals()[1] == 5


def test_failure_reasons(fake_server: FakeServer) -> None:
    s = Scraper(max_body_bytes=4096)
    fake_server.routes[MUTEX] = lambda: (200, b"<html>hello</html>")
    assert reason(s, url(fake_server)) == "not_pprof"
    fake_server.routes[MUTEX] = lambda: (200, b"")
    assert reason(s, url(fake_server)) == "not_pprof"
    assert reason(s, url(fake_server, "/nope")) == "http_status"
    fake_server.routes[MUTEX] = lambda: (200, b"x" * 5000)
    assert reason(s, url(fake_server)) == "too_large"
    # small on the wire, too large once gunzipped
    fake_server.routes[MUTEX] = lambda: (200, gzip.compress(bytes(100_000)))
    assert reason(s, url(fake_server)) == "too_large"
    fake_server.routes[MUTEX] = lambda: (200, b"\x1f\x8b" + b"garbage" * 10)
    assert reason(s, url(fake_server)) == "not_pprof"
    fake_server.hang("mutex")
    started = time.monotonic()
    assert reason(s, url(fake_server), timeout=0.3) == "timeout"
    assert time.monotonic() - started < 1.5
    assert reason(s, f"http://127.0.0.1:{free_port()}/debug/pprof/mutex") == "down"


def test_close_aborts_requests_in_flight(fake_server: FakeServer) -> None:
    fake_server.hang("profile")
    s = Scraper(max_body_bytes=4096)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            s.fetch_profile(url(fake_server, "/debug/pprof/profile?seconds=30"), 60)
        except BaseException as exc:  # noqa: BLE001 (recorded for the assertion)
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    s.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - started < 2
    assert len(outcome) == 1 and isinstance(outcome[0], Aborted)
    with pytest.raises(Aborted):
        s.get(url(fake_server), 1)

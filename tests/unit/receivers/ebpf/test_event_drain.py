"""EventReader.drain() against a poll thread that holds the ring lock through
each poll (as BCC's ring_buffer_poll does, GIL released): a waiting drain()
must get the ring after at most one poll, not whenever the lock happens to
fall to it (it starved for 8.4 s on an idle machine: 'no window closed')."""

from __future__ import annotations

import time
from typing import Any

from telegen.receivers.ebpf.events import EventReader

POLL_MS = 100


class FakeRing:
    def open_ring_buffer(self, _callback: Any) -> None:
        pass


class FakeBpf:
    """BCC's ring calls: poll blocks for its timeout without the GIL."""

    def __init__(self) -> None:
        self.polls = 0
        self.consumed = 0

    def __getitem__(self, name: bytes) -> FakeRing:
        assert name == b"events"
        return FakeRing()

    def ring_buffer_poll(self, timeout_ms: int) -> None:
        self.polls += 1
        time.sleep(timeout_ms / 1000)

    def ring_buffer_consume(self) -> None:
        self.consumed += 1


def test_drain_gets_the_ring_within_one_poll() -> None:
    bpf = FakeBpf()
    errors: list[BaseException] = []
    reader = EventReader(bpf, on_new_process=lambda _p: None, on_exec=lambda _p: None,
                         on_exit=lambda _p: None, on_error=errors.append)
    reader.start()
    try:
        while bpf.polls < 2:
            time.sleep(0.01)
        waits = []
        for _ in range(15):
            t0 = time.monotonic()
            reader.drain()
            waits.append(time.monotonic() - t0)
            time.sleep(0.013)
        polls = bpf.polls
        time.sleep(3 * POLL_MS / 1000)
        assert bpf.polls > polls, "the poll thread did not resume after drain()"
    finally:
        reader.stop()
    assert not errors
    assert max(waits) < 2.5 * POLL_MS / 1000, f"drain waited {max(waits):.2f}s for the ring"

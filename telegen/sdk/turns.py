"""The SDK's threads' turns at the GIL beside a main thread that never gives
it up.

A thread waiting for the GIL asks its holder to drop it only when it has
waited a whole switch interval (5 ms) *without any switch*; an asyncio loop
drops and retakes the GIL at every epoll call, so on a busy loop that never
happens and the waiter starves -- for seconds (measured: a thread sleeping
50 ms woke 1.5 s late), its every wake-up spent in futex calls. The SDK's
threads (uploader, the sampler thread's folds) would miss their times and
cost the application while they wait. So each says when it will next want
the GIL (:meth:`Turns.at`), and the signal tick, which runs in the main
thread, releases the GIL for a moment (``time.sleep(0)``) once one is due:
the waiting thread takes it, and the main thread gets it back at its next
switch request. Measured on the bench service: wake-ups 0.5 ms late
(median) instead of seconds, and 1-2 us per tick that gives.
Compatible with Python 3.8+.
"""

from __future__ import annotations

import time

NEVER = 1 << 62
_TAKEN = 20_000         # ns: a release that took longer let another thread run


class Turns:
    """``next``: the ``perf_counter_ns`` from which one of our threads waits
    for the GIL (the ticks read it directly)."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self.next = NEVER

    def at(self, who: str, seconds: float) -> None:
        """``who`` will want the GIL in ``seconds`` (it sleeps till then);
        until it calls again it is due: it is working, or wants to."""
        self._due[who] = time.perf_counter_ns() + int(seconds * 1e9)
        self.next = min(self._due.values())

    def done(self, who: str) -> None:
        """``who`` no longer runs."""
        self._due.pop(who, None)
        self.next = min(self._due.values(), default=NEVER)

    @staticmethod
    def give(budget_ns: int = 1_000_000) -> None:
        """Release the GIL for a moment (from the thread holding it), again
        while another thread takes it each time (its work between two system
        calls: an import's file reads get many turns in one tick), for up to
        ``budget_ns``. Not taken (the thread waits on I/O, not on the GIL):
        one release, ~2 us."""
        clock, sleep = time.perf_counter_ns, time.sleep
        start = t0 = clock()
        while True:
            sleep(0)
            t1 = clock()
            if t1 - t0 < _TAKEN or t1 - start > budget_ns:
                return
            t0 = t1

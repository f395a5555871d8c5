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
(median) instead of seconds; a release costs ~80 us here, so ticks give
only while one of our threads is due.
Compatible with Python 3.8+.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

NEVER = 1 << 62
_TRIES = 3              # releases in a row that none of our threads used: stop


class Turns:
    """``next``: the ``perf_counter_ns`` from which one of our threads waits
    for the GIL (the ticks read it directly)."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        # who -> its thread's CPU-time clock (Linux: a negative number)
        self._clocks: dict[str, int | None] = {}
        # who -> due ticks to let pass, and the length of its last back-off (see give)
        self._skip: dict[str, int] = {}
        self._fruitless: dict[str, int] = {}
        self.next = NEVER

    def at(self, who: str, seconds: float) -> None:
        """``who`` (the calling thread) will want the GIL in ``seconds`` (it
        sleeps till then); until it calls again it is due: it is working,
        or wants to."""
        if who not in self._clocks:
            try:
                self._clocks[who] = time.pthread_getcpuclockid(threading.get_ident())
            except (AttributeError, OSError):   # not on this platform: no clock
                self._clocks[who] = None
        self._due[who] = time.perf_counter_ns() + int(seconds * 1e9)
        self.next = min(self._due.values())

    def done(self, who: str) -> None:
        """``who`` no longer runs."""
        self._due.pop(who, None)
        for table in (self._clocks, self._skip, self._fruitless):
            table.pop(who, None)
        self.next = min(self._due.values(), default=NEVER)

    def give(self, budget_ns: int = 1_000_000) -> bool:
        """Release the GIL for a moment (from the thread holding it), again
        and again while one of our threads uses it (its CPU clock moves: an
        import's file reads get many turns in one tick), for up to
        ``budget_ns``; stop after ``_TRIES`` releases in a row it did not
        use. A release is ``time.sleep(0)``: long enough (~80 us on the VM
        this was built on) for a waiting thread to wake and take the GIL --
        not always the first time -- which a release without a sleep
        (``os.sched_yield``, a zero-timeout ``select``) is not: measured,
        those left the waiter starving. A due thread that did not use a give
        (it waits on something else: a send to a slow agent) backs off: its
        next due ticks are let pass, 1, 3, 7 ... up to 31; each thread backs
        off alone, so another one's turn is not delayed. Returns whether it
        released the GIL."""
        now = time.perf_counter_ns()
        takers = []
        for who, due in list(self._due.items()):
            if due > now:
                continue
            skip = self._skip.get(who, 0)
            if skip:
                self._skip[who] = skip - 1
            else:
                takers.append(who)
        if not takers:
            return False
        clocks = list(self._clocks.values())
        before = {who: _cpu([self._clocks.get(who)]) for who in takers}
        used = _cpu(clocks)
        tries = 0
        while tries < _TRIES and time.perf_counter_ns() - now < budget_ns:
            time.sleep(0)
            moved = _cpu(clocks)
            tries = tries + 1 if moved == used else 0
            used = moved
        for who in takers:
            if who not in self._due:            # done() meanwhile
                continue
            if _cpu([self._clocks.get(who)]) == before[who]:
                self._fruitless[who] = back_off = min(self._fruitless.get(who, 0) * 2 + 1, 31)
                self._skip[who] = back_off
            else:
                self._fruitless[who] = 0
        return True


def _cpu(clocks: Iterable[int | None]) -> int:
    total = 0
    for clock in clocks:
        if clock is None:
            continue
        try:
            total += time.clock_gettime_ns(clock)
        except OSError:         # its thread is gone
            pass
    return total

"""The in-process sampler: a named daemon thread that, ``rate`` times a
second, records every thread's stack (``sys._current_frames()``) and, with
``asyncio``, the await chain of every suspended asyncio task, each with the
OpenTelemetry span active in that thread or task.

Stacks aggregate in a bounded dict (``max_stacks`` distinct stacks per upload
interval; samples of new stacks beyond it are dropped and counted). A sample
is one tick: wall time, so sleeping threads and suspended tasks count. A
running task is already on its thread's stack, so only suspended tasks add
task samples. Compatible with Python 3.8+; nothing here raises into the
application.

What drives the ticks (``mode``): with ``signal`` a per-thread timer sends
SIGPROF to the main thread and the sampling runs in its Python handler, in
the main thread, with the GIL the application already holds
(:mod:`telegen.sdk.timer`); with ``thread`` the sampler thread wakes at the
rate and waits for the GIL itself. That wait is what makes a thread sampler
expensive and, on a busy single-threaded asyncio service, starved: the loop
thread drops and retakes the GIL at every ``epoll`` call, so CPython's forced
switch to a waiting thread never fires (12.8 of 99 ticks a second were taken
that way). ``auto`` (the default) uses ``signal`` when it can be installed
(started from the main thread, Linux, SIGPROF free) and ``thread`` otherwise.
In signal mode the sampler thread only supervises, four times a second: while
no tick has come for ``_STALL`` seconds (the main thread is blocked in C code
that does not return to Python) it samples at the rate itself, and if the
application installs its own SIGPROF handler the timer is deleted and the
thread takes over for good. A busy loop in the main thread would starve the
SDK's threads of the GIL (folds, uploads): a tick hands it over when one of
them is due (:mod:`telegen.sdk.turns`).

The sampler holds the GIL while it works, so every microsecond it spends is
taken from the application, and a tick runs with the application's caches
cold, so a tick only copies what will change -- each thread's frames as
``[code, f_lasti, ...]``, the visited tasks' await chains, the spans -- and
the sampler thread names and counts the copies a few times a second, in one
warm pass (:mod:`telegen.sdk.fold`); an idle thread and a task blocked on the
same future as at the last tick reuse their copy
(:class:`telegen.sdk.threads.StackCopier`, :class:`telegen.sdk.tasks.ChainWalker`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from telegen.sdk import codes
from telegen.sdk import tasks as _tasks
from telegen.sdk.fold import Folder
from telegen.sdk.spans import SpanTracker
from telegen.sdk.stats import Stats
from telegen.sdk.threads import StackCopier
from telegen.sdk.timer import MainThreadTicks
from telegen.sdk.turns import Turns

if TYPE_CHECKING:
    from telegen.sdk.codes import Names, SampleKey
    from telegen.sdk.fold import Capture, Pending
_SUPERVISE = 0.25           # signal mode: how often the sampler thread looks (and folds)
_STALL = 0.1                # no signal tick for this long: the thread samples
_FOLD_TICKS = 25            # thread mode: fold every this many ticks
_MAX_PENDING = 2000         # ticks queued unfolded: the tick folds itself
MODES = ("auto", "signal", "thread")
log = logging.getLogger("telegen.sdk")


class Buffer:
    """Aggregated samples of one upload interval, and the code table that
    names their frames."""

    def __init__(self, names: Names) -> None:
        self.start_ns = time.time_ns()
        self.counts: Counter[SampleKey] = Counter()
        self.names = names


class Sampler:
    def __init__(self, *, rate: int, asyncio: bool, tracker: SpanTracker, stats: Stats,
                 max_stacks: int = 20000, mode: str = "auto", max_tasks: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.mode = mode
        self.interval = 1.0 / rate
        self.asyncio = asyncio
        self.tracker = tracker
        self.stats = stats
        self.names: Names = {}                  # id(code) -> (function, file, code)
        self.ignore: set[int] = set()           # our own threads
        self._main = threading.main_thread().ident or 0
        self._stacks = StackCopier(self._main, self.ignore)
        self._walker = _tasks.ChainWalker(max_tasks)
        self._folder = Folder(stats, max_stacks)
        self._buffer = Buffer(self.names)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # held while running; stop() releases it: one C call to sleep between
        # ticks (Event.wait allocates a lock and runs a Condition each time)
        self._sleep = threading.Lock()
        self._sleep.acquire()
        self._thread: threading.Thread | None = None
        self._ticks: MainThreadTicks | None = None
        self._last_signal = 0               # perf_counter_ns of the last signal tick
        self._busy = False                      # in a signal tick, or stopped
        self._main_holds = False                # the main thread holds or takes _lock
        self._pending: Pending = []             # what the ticks since the last fold captured
        self.turns = Turns()                    # when our threads want the GIL (signal mode)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.mode != "thread":
            self._last_signal = time.perf_counter_ns()
            self._ticks = MainThreadTicks.install(self._on_signal, self.interval)
            if self._ticks is None:
                msg = "telegen.sdk: sampling from a thread: %s"
                (log.warning if self.mode == "signal" else log.info)(msg, MainThreadTicks.reason)
        self._thread = threading.Thread(target=self._run, name="telegen-sdk-sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        if not self._stop.is_set():
            self._busy = True
            self._stop.set()
            if self._ticks is not None:
                self._ticks.delete()
            self._sleep.release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def drain(self) -> Buffer:
        """The samples so far; a new interval starts."""
        with self._holding():
            self._fold()
            if codes.full(self.names):          # the drained buffer keeps the old table
                self.names = {}
            buf, self._buffer = self._buffer, Buffer(self.names)
        return buf

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """``_lock``, taken outside a tick from any thread: a signal tick
        that interrupts the main thread while it holds the lock, or is about
        to take it, skips instead of waiting for itself."""
        main = threading.get_ident() == self._main
        if main:
            self._main_holds = True
        try:
            with self._lock:
                yield
        finally:
            if main:
                self._main_holds = False

    def forget_after_fork(self) -> None:
        """In a forked child: this sampler's threads and timer stayed in the
        parent; take its SIGPROF handler down so a new sampler can install one."""
        self._busy = True
        self._stop.set()
        if self._ticks is not None:
            self._ticks.forget()
            self._ticks = None

    @property
    def signal_driven(self) -> bool:
        return self._ticks is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGPROF handler: one tick, in the main thread (see the module notes);
        then, if one of our threads waits for the GIL, its turn (``_busy``
        still set: a signal handled while the GIL is released returns at once)."""
        if self._busy:
            return
        self._busy = True
        self._last_signal = t0 = time.perf_counter_ns()
        stats = self.stats
        try:
            stats.signal_ticks += 1
            self.sample_once(True, frame)
        except Exception:
            stats.errors += 1
        try:
            t1 = time.perf_counter_ns()
            stats.sampling_us += (t1 - t0) // 1000
            if t1 >= self.turns.next and self.turns.give():
                stats.gil_handoffs += 1
        finally:
            self._busy = self._stop.is_set()

    def _tick(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            self.sample_once()
        except Exception:
            self.stats.errors += 1
        self.stats.sampling_us += (time.perf_counter_ns() - t0) // 1000

    def _run(self) -> None:
        me = threading.current_thread().ident
        if me is not None:
            self.ignore.add(me)
        interval, sleep, monotonic = self.interval, self._sleep.acquire, time.monotonic
        next_t = monotonic()
        n = 0
        while not self._stop.is_set():
            if self._ticks is not None and self._supervised():
                self.fold()
                self.turns.at("sampler", _SUPERVISE)
                if sleep(True, _SUPERVISE):
                    break
                next_t = monotonic()
                continue
            self._tick()
            n += 1
            if n % _FOLD_TICKS == 0:
                self.fold()
            next_t += interval
            delay = next_t - monotonic()
            if delay < -interval:           # fell behind (suspended, GIL-starved): resync
                next_t = monotonic()
                delay = 0.0
            if delay > 0 and sleep(True, delay):    # released: stopping
                break

    def _supervised(self) -> bool:
        """Signal mode: True while signal ticks come (the thread need not sample)."""
        ticks = self._ticks
        if ticks is not None and ticks.replaced():
            log.warning("telegen.sdk: the application set its own SIGPROF handler; "
                        "sampling from a thread from now on")
            ticks.delete()
            self._ticks = None
            return False
        return time.perf_counter_ns() - self._last_signal < _STALL * 1e9

    # -- one tick ------------------------------------------------------------------
    def sample_once(self, in_signal: bool = False, frame: FrameType | None = None) -> None:
        """One round. ``in_signal``: called from the signal handler, in the main
        thread, whose stack is then ``frame`` (the one the signal interrupted).

        Only copies: each thread's frames as ``[code, f_lasti, ...]`` and its
        span (:class:`telegen.sdk.threads.StackCopier`), and the visited
        tasks' (:class:`telegen.sdk.tasks.ChainWalker`); :meth:`fold` names
        and counts them (:mod:`telegen.sdk.fold`)."""
        if in_signal and self._main_holds:      # interrupted drain() or fold()
            return
        stats = self.stats
        stats.ticks += 1
        found = self._stacks.tick(self.tracker.threads, in_signal, frame, stats.ticks)
        tasks: list[Capture] = []
        weight = self._walker.tick(self.tracker, tasks) if self.asyncio else 1
        with self._lock:
            pending = self._pending
            pending.append((1, False, found))
            if tasks:
                pending.append((weight, True, tasks))
            if len(pending) > _MAX_PENDING:     # nobody folded for a while (GIL-starved)
                self._fold()

    def fold(self) -> None:
        """Count the samples queued by the ticks since the last fold (the
        sampler thread does it a few times a second: one warm pass instead
        of a dict update in every tick, with the application's caches cold)."""
        t0 = time.perf_counter_ns()
        with self._holding():
            self._fold()
        self.stats.sampling_us += (time.perf_counter_ns() - t0) // 1000

    def _fold(self) -> None:
        pending, self._pending = self._pending, []
        self._folder.fold(pending, self._buffer.counts, self.names)

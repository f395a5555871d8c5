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
thread takes over for good.

The sampler holds the GIL while it works, so every microsecond it spends is
taken from the application: a frame is recorded as ``(id(code), f_lasti)``
and named only at upload (:mod:`telegen.sdk.codes`), and a task blocked on
the same future as at the last tick reuses its chain
(:class:`telegen.sdk.tasks.ChainWalker`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from types import FrameType
from typing import TYPE_CHECKING

from telegen.sdk import codes
from telegen.sdk import tasks as _tasks
from telegen.sdk.spans import SpanTracker
from telegen.sdk.timer import MainThreadTicks

if TYPE_CHECKING:
    from telegen.sdk.codes import FrameKey, Names, SampleKey
_MAX_DEPTH = 512
_SUPERVISE = 0.25           # signal mode: how often the sampler thread looks
_STALL = 0.1                # no signal tick for this long: the thread samples
MODES = ("auto", "signal", "thread")
# generator, coroutine, iterable coroutine, async generator: frames that can be
# suspended and resumed by another caller (their f_back changes)
_SUSPENDABLE = 0x20 | 0x80 | 0x100 | 0x200
log = logging.getLogger("telegen.sdk")


class Stats:
    """Counters the application can read (``telegen.sdk.stats()``)."""

    def __init__(self) -> None:
        self.ticks = 0              # sampling rounds taken (rate x seconds when not starved)
        self.signal_ticks = 0       # of which in the main thread's signal handler
        self.sampling_cpu_us = 0    # CPU time spent sampling, in whichever thread
        self.samples = 0
        self.dropped_samples = 0
        self.errors = 0
        self.exported_profiles = 0
        self.export_failures = 0
        self.dropped_uploads = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


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
        self.max_stacks = max_stacks
        self.names: Names = {}                  # id(code) -> (function, file, code)
        self.ignore: set[int] = set()           # our own threads
        self._walker = _tasks.ChainWalker(self.names, max_tasks)
        self._buffer = Buffer(self.names)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # held while running; stop() releases it: one C call to sleep between
        # ticks (Event.wait allocates a lock and runs a Condition each time)
        self._sleep = threading.Lock()
        self._sleep.acquire()
        self._thread: threading.Thread | None = None
        self._ticks: MainThreadTicks | None = None
        self._last_signal = 0.0
        self._in_handler = False
        self._owner = 0                         # thread holding _lock in drain()
        # tid -> (top frame, its f_lasti, sample) from the last tick; see sample_once
        self._still: dict[int, tuple[FrameType, int, SampleKey]] = {}

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.mode != "thread":
            self._last_signal = time.monotonic()
            self._ticks = MainThreadTicks.install(self._on_signal, self.interval)
            if self._ticks is None:
                msg = "telegen.sdk: sampling from a thread: %s"
                (log.warning if self.mode == "signal" else log.info)(msg, MainThreadTicks.reason)
        self._thread = threading.Thread(target=self._run, name="telegen-sdk-sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        if not self._stop.is_set():
            self._stop.set()
            if self._ticks is not None:
                self._ticks.delete()
            self._sleep.release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def drain(self) -> Buffer:
        """The samples so far; a new interval starts."""
        with self._lock:
            self._owner = threading.get_ident()     # a signal tick here must not wait for it
            try:
                if codes.full(self.names):          # the drained buffer keeps the old table
                    self.names = {}
                    self._walker = _tasks.ChainWalker(self.names, self._walker.max_tasks)
                    self._still = {}
                buf, self._buffer = self._buffer, Buffer(self.names)
            finally:
                self._owner = 0
        return buf

    def forget_after_fork(self) -> None:
        """In a forked child: this sampler's threads and timer stayed in the
        parent; take its SIGPROF handler down so a new sampler can install one."""
        self._stop.set()
        if self._ticks is not None:
            self._ticks.forget()
            self._ticks = None

    @property
    def signal_driven(self) -> bool:
        return self._ticks is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGPROF handler: one tick, in the main thread (see the module notes)."""
        if self._in_handler or self._stop.is_set():
            return
        self._in_handler = True
        try:
            self._last_signal = time.monotonic()
            self.stats.signal_ticks += 1
            self._tick(True, frame)
        finally:
            self._in_handler = False

    def _tick(self, in_signal: bool = False, frame: FrameType | None = None) -> None:
        t0 = time.thread_time_ns()
        try:
            self.sample_once(in_signal, frame)
        except Exception:
            self.stats.errors += 1
        self.stats.sampling_cpu_us += (time.thread_time_ns() - t0) // 1000

    def _run(self) -> None:
        me = threading.current_thread().ident
        if me is not None:
            self.ignore.add(me)
        interval, sleep, monotonic = self.interval, self._sleep.acquire, time.monotonic
        next_t = monotonic()
        while not self._stop.is_set():
            if self._ticks is not None and self._supervised():
                if sleep(True, _SUPERVISE):
                    break
                next_t = monotonic()
                continue
            self._tick()
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
        return time.monotonic() - self._last_signal < _STALL

    # -- one tick ------------------------------------------------------------------
    def sample_once(self, in_signal: bool = False, frame: FrameType | None = None) -> None:
        """One round. ``in_signal``: called from the signal handler, in the main
        thread, whose stack is then ``frame`` (the one the signal interrupted).

        A thread whose top frame is the same frame object at the same
        instruction as at the last tick has not moved (idle pool workers,
        threads blocked in C): its sample is reused, so a service with many
        idle threads pays a dict lookup per thread, not a walk. The frame
        cannot be another one at the same address (it is held until the next
        tick), and its callers cannot have changed while it is alive unless it
        can be suspended (generators, coroutines: never reused)."""
        if self._owner == threading.get_ident():    # a signal during drain() in this thread
            return
        self.stats.ticks += 1
        names = self.names
        frames = sys._current_frames()
        if in_signal:
            main = threading.main_thread().ident or 0
            if frame is None:
                frames.pop(main, None)
            else:
                frames[main] = frame
        threads = threading._active  # type: ignore[attr-defined]
        ignore, for_thread = self.ignore, self.tracker.for_thread
        last, seen = self._still, {}
        found: list[SampleKey] = []
        frame = None
        for ident, frame in frames.items():
            if ident in ignore:
                continue
            link = for_thread(ident)
            hit = last.get(ident)
            if hit is not None and hit[0] is frame and hit[1] == frame.f_lasti:
                sample = hit[2] if hit[2][4] == link else hit[2][:4] + (link,)
            else:
                th = threads.get(ident)
                sample = (th.native_id or ident, th.name, "", self._stack(frame), link) \
                    if th is not None else (ident, "", "", self._stack(frame), link)
            if not frame.f_code.co_flags & _SUSPENDABLE:
                seen[ident] = (frame, frame.f_lasti, sample)
            found.append(sample)
        self._still = seen
        del frames, frame
        tasks: list[SampleKey] = []
        weight = self._walker.tick(threads, self.tracker, tasks) if self.asyncio else 1
        with self._lock:
            if self.names is not names:         # drain() renewed the table meanwhile
                self._still = {}
                return
            counts = self._buffer.counts
            self._add(counts, found, 1)
            if tasks:
                self._add(counts, tasks, weight)

    def _add(self, counts: Counter[SampleKey], found: list[SampleKey], weight: int) -> None:
        """Count ``found``, ``weight`` each; a new stack beyond ``max_stacks`` is dropped."""
        get, room = counts.get, self.max_stacks - len(counts)
        dropped = 0
        for key in found:
            n = get(key)
            if n is not None:
                counts[key] = n + weight
            elif room > 0:
                counts[key] = weight
                room -= 1
            else:
                dropped += weight
        stats = self.stats
        stats.samples += len(found) * weight - dropped
        stats.dropped_samples += dropped

    def _stack(self, frame: FrameType | None) -> tuple[FrameKey, ...]:
        out: list[FrameKey] = []
        append = out.append
        names = self.names
        while frame is not None:
            code = frame.f_code
            cid = id(code)
            if cid not in names:
                codes.register(names, code, frame)
            append((cid, frame.f_lasti))
            frame = frame.f_back
            if len(out) >= _MAX_DEPTH:
                break
        return tuple(out)

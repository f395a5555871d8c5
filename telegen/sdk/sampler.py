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

The sampler holds the GIL while it works, so every microsecond it spends is
taken from the application: a frame is recorded as ``(id(code), f_lasti)``
and named only at upload (:mod:`telegen.sdk.codes`), and a task blocked on
the same future as at the last tick reuses its chain
(:class:`telegen.sdk.tasks.ChainWalker`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from types import FrameType
from typing import TYPE_CHECKING

from telegen.sdk import codes
from telegen.sdk import tasks as _tasks
from telegen.sdk.spans import SpanTracker

if TYPE_CHECKING:
    from telegen.sdk.codes import FrameKey, Names, SampleKey
_MAX_DEPTH = 512


class Stats:
    """Counters the application can read (``telegen.sdk.stats()``)."""

    def __init__(self) -> None:
        self.ticks = 0              # sampling rounds taken (rate x seconds when not starved)
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
                 max_stacks: int = 20000) -> None:
        self.interval = 1.0 / rate
        self.asyncio = asyncio
        self.tracker = tracker
        self.stats = stats
        self.max_stacks = max_stacks
        self.names: Names = {}                  # id(code) -> (function, file, code)
        self.ignore: set[int] = set()           # our own threads
        self._walker = _tasks.ChainWalker(self.names)
        self._buffer = Buffer(self.names)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # held while running; stop() releases it: one C call to sleep between
        # ticks (Event.wait allocates a lock and runs a Condition each time)
        self._sleep = threading.Lock()
        self._sleep.acquire()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="telegen-sdk-sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._sleep.release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def drain(self) -> Buffer:
        """The samples so far; a new interval starts."""
        with self._lock:
            if codes.full(self.names):          # the drained buffer keeps the old table
                self.names = {}
                self._walker = _tasks.ChainWalker(self.names)
            buf, self._buffer = self._buffer, Buffer(self.names)
        return buf

    def _run(self) -> None:
        me = threading.current_thread().ident
        if me is not None:
            self.ignore.add(me)
        interval, sleep, monotonic = self.interval, self._sleep.acquire, time.monotonic
        next_t = monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                self.stats.errors += 1
            next_t += interval
            delay = next_t - monotonic()
            if delay < -interval:           # fell behind (suspended, GIL-starved): resync
                next_t = monotonic()
                delay = 0.0
            if delay > 0 and sleep(True, delay):    # released: stopping
                break

    # -- one tick ------------------------------------------------------------------
    def sample_once(self) -> None:
        self.stats.ticks += 1
        frames = sys._current_frames()
        threads = threading._active  # type: ignore[attr-defined]
        ignore = self.ignore
        for_thread = self.tracker.for_thread
        found: list[SampleKey] = []
        frame = None
        for ident, frame in frames.items():
            if ident in ignore:
                continue
            th = threads.get(ident)
            if th is not None:
                found.append((th.native_id or ident, th.name, "", self._stack(frame),
                              for_thread(ident)))
            else:
                found.append((ident, "", "", self._stack(frame), for_thread(ident)))
        del frames, frame
        if self.asyncio:
            self._walker.tick(threads, self.tracker.for_task, found)
        with self._lock:
            counts = self._buffer.counts
            if len(counts) + len(found) <= self.max_stacks:
                counts.update(found)            # counted in C
                self.stats.samples += len(found)
            else:
                self._add_bounded(counts, found)

    def _add_bounded(self, counts: Counter[SampleKey], found: list[SampleKey]) -> None:
        stats = self.stats
        for key in found:
            n = counts.get(key)
            if n is not None:
                counts[key] = n + 1
            elif len(counts) < self.max_stacks:
                counts[key] = 1
            else:
                stats.dropped_samples += 1
                continue
            stats.samples += 1

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

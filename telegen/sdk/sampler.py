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
"""

from __future__ import annotations

import sys
import threading
import time
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from telegen.sdk import tasks as _tasks
from telegen.sdk.names import function_name
from telegen.sdk.spans import SpanTracker

if TYPE_CHECKING:
    from telegen.sdk.spans import Link

if TYPE_CHECKING:          # aliases only for the type checker (3.8 has no tuple[...])
    FrameKey = tuple[CodeType, int]
    # (tid, thread name, task name, stack leaf first, span link)
    SampleKey = tuple[int, str, str, tuple[FrameKey, ...], Link | None]
_MAX_DEPTH = 512


class Stats:
    """Counters the application can read (``telegen.sdk.stats()``)."""

    def __init__(self) -> None:
        self.samples = 0
        self.dropped_samples = 0
        self.errors = 0
        self.exported_profiles = 0
        self.export_failures = 0
        self.dropped_uploads = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Buffer:
    """Aggregated samples of one upload interval."""

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        self.counts: dict[SampleKey, int] = {}


class Sampler:
    def __init__(self, *, rate: int, asyncio: bool, tracker: SpanTracker, stats: Stats,
                 max_stacks: int = 20000) -> None:
        self.interval = 1.0 / rate
        self.asyncio = asyncio
        self.tracker = tracker
        self.stats = stats
        self.max_stacks = max_stacks
        self.names: dict[CodeType, tuple[str, str]] = {}   # code -> (function, file)
        self.ignore: set[int] = set()                      # our own threads
        self._buffer = Buffer()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="telegen-sdk-sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def drain(self) -> Buffer:
        """The samples so far; a new interval starts."""
        with self._lock:
            buf, self._buffer = self._buffer, Buffer()
        return buf

    def _run(self) -> None:
        me = threading.current_thread().ident
        if me is not None:
            self.ignore.add(me)
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                self.stats.errors += 1
            next_t += self.interval
            delay = next_t - time.monotonic()
            if delay < -self.interval:      # fell behind (suspended, GIL-starved): resync
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(max(0.0, delay))

    # -- one tick ------------------------------------------------------------------
    def sample_once(self) -> None:
        frames = sys._current_frames()
        threads = threading._active  # type: ignore[attr-defined]
        found: list = []  # type: ignore[type-arg]
        for ident, frame in frames.items():
            if ident in self.ignore:
                continue
            th = threads.get(ident)
            tid = getattr(th, "native_id", None) or ident
            name = th.name if th is not None else ""
            found.append((tid, name, "", self._stack(frame), self.tracker.for_thread(ident)))
        del frames
        if self.asyncio:
            running = _tasks.running_tasks()
            for task in _tasks.all_tasks():
                if id(task) in running or task.done():
                    continue
                chain = _tasks.await_chain(task)
                if not chain:
                    continue
                loop_ident = _tasks.task_thread(task)
                th = threads.get(loop_ident) if loop_ident is not None else None
                tid = getattr(th, "native_id", None) or loop_ident or 0
                name = th.name if th is not None else ""
                found.append((tid, name, _tasks.task_name(task), self._keys(chain),
                              self.tracker.for_task(task)))
        with self._lock:
            counts = self._buffer.counts
            for key in found:
                n = counts.get(key)
                if n is not None:
                    counts[key] = n + 1
                elif len(counts) < self.max_stacks:
                    counts[key] = 1
                else:
                    self.stats.dropped_samples += 1
                    continue
                self.stats.samples += 1

    def _stack(self, frame: FrameType | None) -> tuple[FrameKey, ...]:
        out: list[FrameKey] = []
        names = self.names
        while frame is not None and len(out) < _MAX_DEPTH:
            code = frame.f_code
            if code not in names:
                self._name(code, frame)
            out.append((code, frame.f_lineno or 0))
            frame = frame.f_back
        return tuple(out)

    def _keys(self, frames: tuple[FrameType, ...]) -> tuple[FrameKey, ...]:
        out: list[FrameKey] = []
        for frame in frames:
            code = frame.f_code
            if code not in self.names:
                self._name(code, frame)
            out.append((code, frame.f_lineno or 0))
        return tuple(out)

    def _name(self, code: CodeType, frame: FrameType) -> None:
        if len(self.names) > 50000:
            self.names.clear()
        qual = getattr(code, "co_qualname", None) or code.co_name
        module: Any = frame.f_globals.get("__name__", "")
        self.names[code] = (function_name(str(module or ""), qual, code.co_filename),
                            code.co_filename)

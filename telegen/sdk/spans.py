"""Which OpenTelemetry span is active in each thread and asyncio task.

A :class:`SpanTracker` records spans as they start and end; a SpanProcessor
for opentelemetry-sdk (:func:`make_span_processor`) feeds it. A span belongs
to the asyncio task it started in (if any; tasks are held weakly) or else to
its thread. At most ``_MAX_OPEN`` spans are tracked at once (the oldest of
spans that never end is forgotten), so memory stays bounded. The sampler
takes the innermost open span of a task or thread. A span is kept as its
``SpanContext`` (the same object at its start and its end), keyed by ``id``:
its ids are read only when one of its samples is counted (:func:`link_of`,
in the fold), not at every start and end (the processor runs in the
application's threads, for every span). Compatible with Python 3.8+.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    Link = tuple[int, int]          # (trace_id, span_id), hex only at upload
    SpanCtx = Any                   # a span's SpanContext: .trace_id, .span_id
_MAX_OPEN = 100000               # spans open at once


_get_running_loop: Any = None
_task_of_loop: Any = None


def _current_task() -> Any:
    """The asyncio task running in this thread, if any (asyncio's C functions,
    looked up once asyncio is imported)."""
    global _get_running_loop, _task_of_loop
    if _get_running_loop is None:
        events, tasks = sys.modules.get("asyncio.events"), sys.modules.get("asyncio.tasks")
        if events is None or tasks is None:
            return None
        _task_of_loop = tasks.current_task
        _get_running_loop = events._get_running_loop
    loop = _get_running_loop()
    if loop is None:
        return None
    try:
        return _task_of_loop(loop)
    except Exception:
        return None


class SpanTracker:
    """Open spans per thread and per task, innermost last.

    Spans of a task are kept under ``id(task)`` with a weak reference to the
    task (a finished task's id may be reused: the reference tells); entries
    go away when their last span ends. The sampler reads ``threads`` and
    ``tasks`` directly, in its ticks (a method call per thread or task costs
    more there than the lookup): a thread's span is the last of
    ``threads[ident]``, a task's the last of ``tasks[id(task)][1]`` when that
    entry's reference still points to the task. ``started`` and ``ended``
    never raise (they run in the application's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # thread ident -> its open spans; id(task) -> (weak reference to the
        # task, its open spans). Read by the sampler directly (see above).
        self.threads: dict[int, list[SpanCtx]] = {}
        self.tasks: dict[int, tuple[weakref.ref[Any], list[SpanCtx]]] = {}
        # id(span) -> (the dict, key and stack it was put in)
        self._where: dict[int, tuple[dict[int, Any], int, list[SpanCtx]]] = {}

    def started(self, span: Any, parent_context: Any = None) -> None:
        """A span started in this thread (or its running task); the
        signature of ``SpanProcessor.on_start``."""
        try:
            ctx = span.get_span_context()
            task = _current_task()
            with self._lock:
                where = self._where
                if len(where) >= _MAX_OPEN:       # spans that never end: forget the oldest
                    self._forget(next(iter(where)))
                owners: dict[int, Any]
                if task is not None:
                    owners, key = self.tasks, id(task)
                    entry = self.tasks.get(key)
                    if entry is None or entry[0]() is not task:
                        entry = self.tasks[key] = (weakref.ref(task), [])
                    stack = entry[1]
                else:
                    owners, key = self.threads, threading.get_ident()
                    stack = self.threads.get(key)      # type: ignore[assignment]
                    if stack is None:
                        stack = self.threads[key] = []
                where[id(ctx)] = (owners, key, stack)
                stack.append(ctx)
        except Exception:
            pass

    def ended(self, span: Any) -> None:
        """``SpanProcessor.on_end`` (its span is another object than at the
        start, its context the same)."""
        try:
            key = id(span.get_span_context())
            with self._lock:
                self._forget(key)
        except Exception:
            pass

    def after_fork(self) -> None:
        """In a forked child: only the forking thread's open spans go on."""
        me = threading.get_ident()
        self._lock = threading.Lock()
        mine = self.threads.get(me)
        self.threads = {me: mine} if mine else {}
        self.tasks = {}
        self._where = {key: (self.threads, me, mine)
                       for key, (_, _, stack) in self._where.items()
                       if mine is not None and stack is mine}

    def _forget(self, key: int) -> None:
        found = self._where.pop(key, None)
        if found is None:
            return
        where, owner, stack = found
        if stack and id(stack[-1]) == key:
            stack.pop()
        else:
            for i in range(len(stack) - 1, -1, -1):
                if id(stack[i]) == key:
                    del stack[i]
                    break
        if not stack:
            entry = where.get(owner)
            if entry is stack or (type(entry) is tuple and entry[1] is stack):
                del where[owner]


def link_of(ctx: SpanCtx) -> Link | None:
    """A span context's (trace id, span id), or None if it has none."""
    try:
        return (ctx.trace_id, ctx.span_id)
    except Exception:
        return None


def make_span_processor(tracker: SpanTracker) -> Any:
    """An ``opentelemetry.sdk.trace.SpanProcessor`` feeding ``tracker``
    (imports opentelemetry-sdk only when called). Its ``on_start`` and
    ``on_end`` are the tracker's methods themselves: one call less per span."""
    from opentelemetry.sdk.trace import SpanProcessor

    class ProfilingSpanProcessor(SpanProcessor):  # type: ignore[misc]
        """Tells the telegen profiler which span each thread / task is in."""

        def __init__(self) -> None:
            self.on_start = tracker.started         # type: ignore[method-assign]
            self.on_end = tracker.ended             # type: ignore[method-assign]

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return ProfilingSpanProcessor()

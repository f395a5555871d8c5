"""Which OpenTelemetry span is active in each thread and asyncio task.

A :class:`SpanTracker` records spans as they start and end; a SpanProcessor
for opentelemetry-sdk (:func:`make_span_processor`) feeds it. A span belongs
to the asyncio task it started in (if any; tasks are held weakly) or else to
its thread. At most ``_MAX_OPEN`` spans are tracked at once (the oldest of
spans that never end is forgotten), so memory stays bounded. The sampler
asks for the innermost open span of a task or thread. Compatible with Python 3.8+.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    Link = tuple[int, int]          # (trace_id, span_id), hex only at upload
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
    entry's reference still points to the task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # thread ident -> its open spans; id(task) -> (weak reference to the
        # task, its open spans). Read by the sampler directly (see above).
        self.threads: dict[int, list[Link]] = {}
        self.tasks: dict[int, tuple[weakref.ref[Any], list[Link]]] = {}
        # span id -> (the dict, key, stack and link it was put in)
        self._where: dict[int, tuple[dict[int, Any], int, list[Link], Link]] = {}

    def started(self, trace_id: int, span_id: int) -> None:
        link = (trace_id, span_id)
        task = _current_task()
        with self._lock:
            if len(self._where) >= _MAX_OPEN:       # spans that never end: forget the oldest
                self._forget(next(iter(self._where)))
            where: dict[int, Any]
            if task is not None:
                key = id(task)
                entry = self.tasks.get(key)
                if entry is None or entry[0]() is not task:
                    entry = self.tasks[key] = (weakref.ref(task), [])
                stack = entry[1]
                where = self.tasks
            else:
                key = threading.get_ident()
                stack = self.threads.get(key)      # type: ignore[assignment]
                if stack is None:
                    stack = self.threads[key] = []
                where = self.threads
            stack.append(link)
            self._where[span_id] = (where, key, stack, link)

    def after_fork(self) -> None:
        """In a forked child: only the forking thread's open spans go on."""
        me = threading.get_ident()
        self._lock = threading.Lock()
        mine = self.threads.get(me)
        self.threads = {me: mine} if mine else {}
        self.tasks = {}
        self._where = {span_id: (self.threads, me, mine, link)
                       for span_id, (_, key, stack, link) in self._where.items()
                       if mine is not None and stack is mine}

    def ended(self, span_id: int) -> None:
        with self._lock:
            self._forget(span_id)

    def _forget(self, span_id: int) -> None:
        found = self._where.pop(span_id, None)
        if found is None:
            return
        where, key, stack, link = found
        if stack and stack[-1] is link:
            stack.pop()
        else:
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is link:
                    del stack[i]
                    break
        if not stack:
            entry = where.get(key)
            if entry is stack or (type(entry) is tuple and entry[1] is stack):
                del where[key]


def make_span_processor(tracker: SpanTracker) -> Any:
    """An ``opentelemetry.sdk.trace.SpanProcessor`` feeding ``tracker``
    (imports opentelemetry-sdk only when called)."""
    from opentelemetry.sdk.trace import SpanProcessor

    started, ended = tracker.started, tracker.ended     # runs in the app's threads: keep it short

    class ProfilingSpanProcessor(SpanProcessor):  # type: ignore[misc]
        """Tells the telegen profiler which span each thread / task is in."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            try:
                ctx = span.get_span_context()
                started(ctx.trace_id, ctx.span_id)
            except Exception:
                pass

        def on_end(self, span: Any) -> None:
            try:
                ended(span.get_span_context().span_id)
            except Exception:
                pass

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return ProfilingSpanProcessor()

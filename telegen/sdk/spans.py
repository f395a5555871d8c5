"""Which OpenTelemetry span is active in each thread and asyncio task.

A :class:`SpanTracker` records spans as they start and end; a SpanProcessor
for opentelemetry-sdk (:func:`make_span_processor`) feeds it. A span belongs
to the asyncio task it started in (if any; tasks are held weakly, so finished
tasks drop out) or else to its thread. The sampler asks for the innermost
open span of a task or thread. Compatible with Python 3.8+.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    Link = tuple[str, str]          # (trace_id hex, span_id hex)
_MAX_THREADS = 10000


def _current_task() -> Any:
    events = sys.modules.get("asyncio.events")
    if events is None:
        return None
    try:
        loop = events._get_running_loop()
        if loop is None:
            return None
        return sys.modules["asyncio.tasks"].current_task(loop)
    except Exception:
        return None


class SpanTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[int, list[Link]] = {}
        self._tasks: weakref.WeakKeyDictionary[Any, list[Link]] = weakref.WeakKeyDictionary()
        self._where: dict[str, Any] = {}    # span id -> list it was put in

    def started(self, trace_id: int, span_id: int) -> None:
        link = (format(trace_id, "032x"), format(span_id, "016x"))
        task = _current_task()
        with self._lock:
            if task is not None:
                stack = self._tasks.get(task)
                if stack is None:
                    stack = self._tasks[task] = []
            else:
                tid = threading.get_ident()
                stack = self._threads.get(tid)
                if stack is None:
                    if len(self._threads) >= _MAX_THREADS:
                        self._threads = {k: v for k, v in self._threads.items() if v}
                    stack = self._threads[tid] = []
            stack.append(link)
            if len(self._where) < 100000:
                self._where[link[1]] = stack

    def ended(self, span_id: int) -> None:
        sid = format(span_id, "016x")
        with self._lock:
            stack = self._where.pop(sid, None)
            if stack is None:
                return
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][1] == sid:
                    del stack[i]
                    break

    def for_thread(self, tid: int) -> Link | None:
        stack = self._threads.get(tid)
        return stack[-1] if stack else None

    def for_task(self, task: Any) -> Link | None:
        if not self._tasks:             # common case: no task is in a span
            return None
        try:
            stack = self._tasks.get(task)
        except TypeError:
            return None
        return stack[-1] if stack else None


def make_span_processor(tracker: SpanTracker) -> Any:
    """An ``opentelemetry.sdk.trace.SpanProcessor`` feeding ``tracker``
    (imports opentelemetry-sdk only when called)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class ProfilingSpanProcessor(SpanProcessor):  # type: ignore[misc]
        """Tells the telegen profiler which span each thread / task is in."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            try:
                ctx = span.get_span_context()
                tracker.started(ctx.trace_id, ctx.span_id)
            except Exception:
                pass

        def on_end(self, span: Any) -> None:
            try:
                tracker.ended(span.get_span_context().span_id)
            except Exception:
                pass

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return ProfilingSpanProcessor()

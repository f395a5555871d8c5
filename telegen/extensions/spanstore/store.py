"""A bounded, time-windowed index of spans by thread, for "which span was
active on thread (pid, tid) at instant t".

Spans are kept until ``retention`` after they end or until ``max_spans`` is
exceeded (oldest arrival first). Per thread they sit in a list sorted by start
time; a lookup bisects to the last span starting at or before ``t`` and walks
back no further than the longest span seen on that thread, so it costs
O(log n + spans overlapping t). The innermost active span is the covering
span that started last (on a tie: the one that ends first; on equal
intervals: the child, by parent id).

Late spans: the ``spanlink`` processor reports the newest sample timestamp it
has already sent on (:meth:`SpanIndex.mark_released`); a span that arrives
starting before that instant may have missed samples and is counted late.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from telegen.ptrace import SpanRecord


class _ThreadSpans:
    __slots__ = ("starts", "spans", "max_duration")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.spans: list[SpanRecord] = []
        self.max_duration = 0

    def insert(self, span: SpanRecord) -> None:
        i = bisect.bisect_right(self.starts, span.start_ns)
        self.starts.insert(i, span.start_ns)
        self.spans.insert(i, span)
        self.max_duration = max(self.max_duration, span.end_ns - span.start_ns)

    def remove(self, span: SpanRecord) -> None:
        i = bisect.bisect_left(self.starts, span.start_ns)
        while i < len(self.spans) and self.starts[i] == span.start_ns:
            if self.spans[i] is span:
                del self.starts[i], self.spans[i]
                return
            i += 1

    def find(self, t_ns: int) -> SpanRecord | None:
        i = bisect.bisect_right(self.starts, t_ns) - 1
        earliest = t_ns - self.max_duration
        best: SpanRecord | None = None
        while i >= 0:
            span = self.spans[i]
            if span.start_ns < earliest or (best is not None and span.start_ns < best.start_ns):
                break
            if t_ns < span.end_ns and (best is None or span.end_ns < best.end_ns or (
                    span.end_ns == best.end_ns and span.parent_span_id == best.span_id)):
                best = span
            i -= 1
        return best


class SpanIndex:
    """Thread-safe. ``on_count(name, n)`` receives the counters (added, late,
    evicted, expired, duplicate, without_thread)."""

    def __init__(self, *, retention_s: float, max_spans: int,
                 on_count: Callable[[str, int], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._retention_ns = int(retention_s * 1e9)
        self._max = max_spans
        self._count = on_count or (lambda name, n: None)
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: dict[str, SpanRecord] = {}
        self._threads: dict[tuple[int, int], _ThreadSpans] = {}
        self._order: deque[SpanRecord] = deque()    # arrival order
        self._released_ns = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, spans: Iterable[SpanRecord]) -> None:
        counts = {"added": 0, "late": 0, "duplicate": 0, "without_thread": 0}
        with self._lock:
            for span in spans:
                if span.span_id in self._by_id:
                    counts["duplicate"] += 1
                    continue
                self._by_id[span.span_id] = span
                self._order.append(span)
                counts["added"] += 1
                if span.pid is None or span.tid is None:
                    counts["without_thread"] += 1
                else:
                    key = (span.pid, span.tid)
                    per = self._threads.get(key)
                    if per is None:
                        per = self._threads[key] = _ThreadSpans()
                    per.insert(span)
                if span.start_ns < self._released_ns:
                    counts["late"] += 1
            evicted, expired = self._evict()
        counts["evicted"], counts["expired"] = evicted, expired
        for name, n in counts.items():
            if n:
                self._count(name, n)

    def _evict(self) -> tuple[int, int]:
        evicted = expired = 0
        cutoff = self._clock() - self._retention_ns
        while self._order and (len(self._order) > self._max or self._order[0].end_ns < cutoff):
            span = self._order.popleft()
            if len(self._order) >= self._max:
                evicted += 1
            else:
                expired += 1
            del self._by_id[span.span_id]
            if span.pid is not None and span.tid is not None:
                key = (span.pid, span.tid)
                per = self._threads[key]
                per.remove(span)
                if not per.spans:
                    del self._threads[key]
        return evicted, expired

    def expire(self) -> None:
        with self._lock:
            evicted, expired = self._evict()
        if expired:
            self._count("expired", expired)

    def find(self, pid: int, tid: int, t_ns: int) -> SpanRecord | None:
        """The innermost span active on thread ``tid`` of ``pid`` at ``t_ns``."""
        with self._lock:
            per = self._threads.get((pid, tid))
            return per.find(t_ns) if per is not None else None

    def get(self, span_id: str) -> SpanRecord | None:
        with self._lock:
            return self._by_id.get(span_id)

    def mark_released(self, t_ns: int) -> None:
        with self._lock:
            self._released_ns = max(self._released_ns, t_ns)

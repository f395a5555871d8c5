"""SpanIndex: innermost span per thread and instant, bounds, late spans."""

from __future__ import annotations

import random

from telegen.extensions.spanstore.store import SpanIndex
from telegen.ptrace import SpanRecord

NOW = 10_000_000_000_000


def span(sid: int, start: int, end: int, tid: int | None = 7, pid: int | None = 1,
         parent: int = 0) -> SpanRecord:
    return SpanRecord("ab" * 16, f"{sid:016x}", f"{parent:016x}" if parent else "",
                      f"s{sid}", NOW + start, NOW + end, pid, tid)


def index(**kw: int) -> tuple[SpanIndex, dict[str, int]]:
    counts: dict[str, int] = {}

    def count(name: str, n: int) -> None:
        counts[name] = counts.get(name, 0) + n

    idx = SpanIndex(retention_s=kw.get("retention", 60), max_spans=kw.get("max_spans", 100),
                    on_count=count, clock=lambda: NOW + kw.get("now", 0))
    return idx, counts


def test_innermost_span_wins_and_boundaries_are_half_open() -> None:
    idx, _ = index()
    root, child, grandchild, sibling = (span(1, 0, 1000), span(2, 100, 500, parent=1),
                                        span(3, 200, 300, parent=2), span(4, 600, 900, parent=1))
    idx.add([grandchild, root, sibling, child])      # arrival order does not matter
    find = lambda t: idx.find(1, 7, NOW + t)  # noqa: E731
    assert find(50) is root
    assert find(100) is child
    assert find(250) is grandchild
    assert find(300) is child           # end is exclusive
    assert find(550) is root
    assert find(700) is sibling
    assert find(1000) is None and find(-1) is None
    assert idx.find(1, 8, NOW + 250) is None      # another thread
    assert idx.find(2, 7, NOW + 250) is None      # another process


def test_same_start_picks_the_shorter_span_and_long_spans_are_found() -> None:
    idx, _ = index(max_spans=1000)
    outer, inner = span(1, 0, 10_000), span(2, 0, 50)
    idx.add([inner, outer] + [span(10 + i, 100 + i * 10, 105 + i * 10) for i in range(100)])
    assert idx.find(1, 7, NOW + 10) is inner
    assert idx.find(1, 7, NOW + 107) is outer      # between the short ones
    assert idx.find(1, 7, NOW + 9_999) is outer


def test_matches_brute_force_on_random_nested_spans() -> None:
    rng = random.Random(5)
    idx, _ = index(max_spans=10_000)
    spans: list[SpanRecord] = []

    def grow(start: int, end: int, depth: int, parent: int = 0) -> None:
        t = start
        while depth < 4 and t < end:
            s = t + rng.randrange(0, 50)
            e = min(end, s + rng.randrange(1, 400))
            if s >= e:
                break
            spans.append(span(len(spans) + 1, s, e, parent=parent))
            grow(s, e, depth + 1, len(spans))
            t = e + rng.randrange(0, 30)

    grow(0, 20_000, 0)
    idx.add(reversed(spans))     # SDKs export children (they end first) before parents
    for t in range(-10, 20_010, 7):
        covering = [(s.start_ns, -s.end_ns, depth, s) for depth, s in enumerate(spans)
                    if s.covers(NOW + t)]      # children come after their parents
        want = max(covering, key=lambda c: c[:3])[3] if covering else None
        assert idx.find(1, 7, NOW + t) is want, t


def test_bounds_retention_duplicates_and_late_spans() -> None:
    idx, counts = index(max_spans=3)
    idx.add([span(i, i * 10, i * 10 + 5) for i in range(1, 6)])
    assert len(idx) == 3 and counts["evicted"] == 2
    assert idx.get(f"{1:016x}") is None and idx.get(f"{5:016x}") is not None
    idx.add([span(5, 50, 55)])
    assert counts["duplicate"] == 1
    idx.add([span(20, 0, 1, tid=None)])
    assert counts["without_thread"] == 1
    idx.mark_released(NOW + 1000)
    idx.add([span(21, 900, 990), span(22, 1100, 1200)])
    assert counts["late"] == 1

    old, counts = index(retention=1, now=5_000_000_000)
    old.add([span(1, 0, 10), span(2, 4_500_000_000, 4_600_000_000)])
    assert counts["expired"] == 1 and len(old) == 1

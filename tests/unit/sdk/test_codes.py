"""Frame keys (id(code), f_lasti): lines resolved at upload equal f_lineno;
the chain cache of blocked tasks; the span tracker's bookkeeping."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

from telegen.sdk import codes
from telegen.sdk.sampler import Sampler
from telegen.sdk.spans import SpanTracker, link_of
from telegen.sdk.stats import Stats
from telegen.sdk.tasks import ChainWalker


def _busy(stop: threading.Event) -> None:
    while not stop.is_set():
        json.dumps({"a": [1, 2, {"b": [3, 4]}]}, indent=2, sort_keys=True)
        sorted(str(i) for i in range(50))


def test_lines_from_lasti_equal_f_lineno() -> None:
    stop = threading.Event()
    t = threading.Thread(target=_busy, args=(stop,))
    t.start()
    lines = codes.Lines()
    checked, wrong = 0, []
    try:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            frame = sys._current_frames().get(t.ident or 0)
            while frame is not None:
                got = lines.line(frame.f_code, frame.f_lasti)
                if got != (frame.f_lineno or 0):
                    wrong.append((frame.f_code.co_name, frame.f_lasti, got, frame.f_lineno))
                checked += 1
                frame = frame.f_back
            time.sleep(0.0005)
    finally:
        stop.set()
        t.join()
    assert checked > 200 and not wrong


def test_a_coroutine_not_started_is_at_its_first_line() -> None:
    async def later() -> None:
        pass

    coro: Any = later()
    try:
        lasti = coro.cr_frame.f_lasti
        assert codes.Lines().line(coro.cr_code, lasti) == coro.cr_frame.f_lineno
    finally:
        coro.close()


def test_blocked_task_reuses_its_chain_until_it_moves() -> None:
    walker = ChainWalker()
    seen: list[Any] = []

    async def second(fut: asyncio.Future[None]) -> None:
        await fut

    async def blocked(a: asyncio.Future[None], b: asyncio.Future[None]) -> None:
        await a
        await second(b)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = loop.create_future(), loop.create_future()
        task = asyncio.ensure_future(blocked(a, b))
        await asyncio.sleep(0)
        for _ in range(2):
            out: list[Any] = []
            walker.tick(SpanTracker(), out)
            seen.append([frames for t, frames, _ in out if t[1] == task.get_name()][0])
        a.set_result(None)
        await asyncio.sleep(0)
        out = []
        walker.tick(SpanTracker(), out)
        seen.append([frames for t, frames, _ in out if t[1] == task.get_name()][0])
        b.set_result(None)
        await task

    asyncio.run(main())
    first, again, moved = seen
    assert again is first                       # same waiter: the cached chain
    names = [[code.co_name for code in frames[::2]] for frames in seen]   # outermost first
    assert names[0] == ["blocked"] and names[2] == ["blocked", "second"]
    assert moved[0] is first[0] and moved[1] != first[1]               # another await


def test_code_table_is_renewed_between_intervals_only() -> None:
    s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=Stats())
    s.sample_once()
    table = s.names
    table.update({-i: ("x", "x", s.sample_once.__code__) for i in range(1, 50002)})
    buf = s.drain()
    assert buf.names is table and s.names is not table and not s.names
    for key in buf.counts:                      # the drained buffer still resolves
        assert all(code_id in buf.names for code_id, _ in key[3])


def span(trace_id: int, span_id: int) -> Any:
    """What the tracker needs of an opentelemetry-sdk span."""
    ctx = SimpleNamespace(trace_id=trace_id, span_id=span_id)
    return SimpleNamespace(get_span_context=lambda: ctx)


def ctx(sp: Any) -> Any:
    return sp.get_span_context()


def test_tracker_forgets_ended_spans_and_reused_task_ids() -> None:
    tracker = SpanTracker()
    s2, s3, s8 = span(1, 2), span(1, 3), span(7, 8)
    tracker.started(s2)
    tracker.started(s3)
    me = threading.get_ident()
    assert tracker.threads[me] == [ctx(s2), ctx(s3)] and link_of(ctx(s3)) == (1, 3)
    tracker.ended(s2)                            # out of order
    assert tracker.threads[me] == [ctx(s3)]
    tracker.ended(s3)
    assert not tracker.threads and not tracker._where
    tracker.started(object())                   # not a span: never raises
    tracker.ended(None)
    assert not tracker.threads and link_of(object()) is None

    async def in_task() -> Any:
        tracker.started(s8)
        return asyncio.current_task()

    async def parked(f: asyncio.Future[None]) -> None:
        await f

    task = asyncio.run(in_task())
    assert tracker.tasks[id(task)][1] == [ctx(s8)]

    async def reused() -> Any:
        """A live task that got the id of a task gone with its span: the
        sampler's lookup (the weak reference) must not give it that span."""
        f = asyncio.get_running_loop().create_future()
        other = asyncio.ensure_future(parked(f))
        await asyncio.sleep(0)
        tracker.tasks[id(other)] = tracker.tasks[id(task)]
        out: list[Any] = []
        ChainWalker().tick(tracker, out)
        f.set_result(None)
        await other
        return [link for t, _, link in out if t[1] == other.get_name()]

    assert asyncio.run(reused()) == [None]
    tracker.ended(s8)
    assert id(task) not in tracker.tasks


def test_blocked_sample_is_reused_until_the_task_waits_on_another_future() -> None:
    """The whole sample (chain, task name, span link) of a task blocked on the
    same future is reused; a new future at the same await (same line, new
    span) gives a fresh sample."""
    tracker = SpanTracker()
    walker = ChainWalker()
    samples: list[Any] = []

    async def loop_on(futs: list[asyncio.Future[None]]) -> None:
        for i, fut in enumerate(futs):
            sp = span(99, 100 + i)
            tracker.started(sp)
            await fut                               # the same await each time
            tracker.ended(sp)

    def mine(task: Any) -> Any:
        out: list[Any] = []
        walker.tick(tracker, out)
        return [c for c in out if c[0][1] == task.get_name()][0]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future(), loop.create_future()]
        task = asyncio.ensure_future(loop_on(futs))
        await asyncio.sleep(0)
        samples.extend([mine(task), mine(task)])
        futs[0].set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        samples.append(mine(task))
        futs[1].set_result(None)
        await task
        out: list[Any] = []
        walker.tick(tracker, out)
        assert not [c for c in out if c[0][1] == task.get_name()]                 # done: no sample
        assert id(task) not in walker._blocked

    asyncio.run(main())
    first, again, moved = samples
    assert again is first
    assert link_of(first[2]) == (99, 100) and link_of(moved[2]) == (99, 101)
    assert moved[1] == first[1] and moved is not first    # same place, new wait


def test_the_running_task_is_not_sampled_as_a_suspended_one() -> None:
    """A task running now is on its thread's stack: the walk skips it (its
    coroutine is executing), also when the registry was resolved before any
    loop ran, and samples the task it awaits with it suspended."""
    walker = ChainWalker()
    walker.tick(SpanTracker(), [])              # resolves now, with no loop running

    async def parked() -> None:
        await asyncio.sleep(30)

    async def main() -> list[str]:
        other = asyncio.ensure_future(parked(), loop=None)
        await asyncio.sleep(0)
        out: list[Any] = []
        walker.tick(SpanTracker(), out)
        other.cancel()
        me = asyncio.current_task()
        assert me is not None
        return [c[0][1] for c in out] + ["me:" + me.get_name()]

    names = asyncio.run(main())
    me = names.pop()[3:]
    assert me not in names and len(names) == 1, names

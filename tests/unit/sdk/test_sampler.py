"""The SDK sampler in this process: thread stacks, asyncio await chains, span links."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from telegen.sdk.sampler import Sampler
from telegen.sdk.spans import SpanTracker, make_span_processor
from telegen.sdk.stats import Stats


def names(sampler: Sampler, stack: tuple[Any, ...]) -> list[str]:
    return [sampler.names[code][0] for code, _ in stack]


def known_wait(evt: threading.Event) -> None:
    evt.wait(30)


@pytest.fixture
def waiting_thread() -> Iterator[threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=known_wait, args=(stop,), name="known-waiter")
    t.start()
    yield t
    stop.set()
    t.join()


def test_thread_stacks_with_names_and_native_ids(waiting_thread: threading.Thread) -> None:
    stats = Stats()
    s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=stats)
    for _ in range(5):
        s.sample_once()
    counts = s.drain().counts
    mine = [(k, n) for k, n in counts.items() if k[1] == "known-waiter"]
    assert len(mine) == 1 and mine[0][1] == 5
    (tid, tname, task, stack, link), _ = mine[0]
    assert tid == waiting_thread.native_id and task == "" and link is None
    chain = names(s, stack)
    assert chain[:3] == ["threading.Condition.wait", "threading.Event.wait",
                         f"{__name__}.known_wait"]
    assert chain[-1] == "threading.Thread._bootstrap"
    assert stats.samples == sum(counts.values()) and stats.dropped_samples == 0


async def _nap() -> None:
    await asyncio.sleep(30)


async def _sleeper() -> None:
    await _nap()


async def _consumer(q: asyncio.Queue[int]) -> None:
    await q.get()


async def _locked(lock: asyncio.Lock) -> None:
    async with lock:
        pass


class LoopThread:
    """An event loop in its own thread running tasks suspended in known places."""

    def __init__(self, tracer: Any = None) -> None:
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.tracer = tracer
        self.span_ids: dict[str, str] = {}
        self.thread = threading.Thread(target=self._run, name="loop-thread")
        self.thread.start()
        assert self.ready.wait(10)

    async def _spanned(self, q: asyncio.Queue[int]) -> None:
        with self.tracer.start_as_current_span("in-task") as span:
            self.span_ids["in-task"] = format(span.get_span_context().span_id, "016x")
            await q.get()

    async def _main(self) -> None:
        q: asyncio.Queue[int] = asyncio.Queue()
        lock = asyncio.Lock()
        await lock.acquire()
        self.tasks = [asyncio.ensure_future(_sleeper()) for _ in range(3)]
        self.tasks += [asyncio.ensure_future(_consumer(q)) for _ in range(2)]
        self.tasks.append(asyncio.ensure_future(_locked(lock)))
        if self.tracer is not None:
            self.tasks.append(asyncio.ensure_future(self._spanned(q)))
        await asyncio.sleep(0.05)
        self.ready.set()
        self.done = asyncio.Event()
        await self.done.wait()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.done.set)
        self.thread.join(10)


def _leaf_chains(s: Sampler, counts: dict[Any, int]) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for (_tid, _tn, task, stack, _link), n in counts.items():
        if task:
            out[tuple(names(s, stack))] += n
    return out


def test_asyncio_await_chains_of_suspended_tasks() -> None:
    lt = LoopThread()
    try:
        s = Sampler(rate=100, asyncio=True, tracker=SpanTracker(), stats=Stats())
        for _ in range(4):
            s.sample_once()
        chains = _leaf_chains(s, s.drain().counts)
    finally:
        lt.stop()
    mod = __name__
    assert chains[("asyncio.tasks.sleep", f"{mod}._nap", f"{mod}._sleeper")] == 3 * 4
    assert chains[("asyncio.queues.Queue.get", f"{mod}._consumer")] == 2 * 4
    lock_chain = [c for c in chains if c[0] == "asyncio.locks.Lock.acquire"]
    assert len(lock_chain) == 1 and lock_chain[0][-1] == f"{mod}._locked"
    assert chains[lock_chain[0]] == 4
    # the loop's own coroutine waits on an Event: also a suspended task
    assert chains[("asyncio.locks.Event.wait", f"{mod}.LoopThread._main")] == 4


def test_asyncio_off_records_no_task_chains() -> None:
    lt = LoopThread()
    try:
        s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=Stats())
        for _ in range(4):
            s.sample_once()
        counts = s.drain().counts
    finally:
        lt.stop()
    assert not _leaf_chains(s, counts)
    every = {n for k in counts for n in names(s, k[3])}
    assert not any(n.endswith(("._nap", "._consumer", "._locked")) for n in every)


def test_spans_of_threads_and_tasks() -> None:
    tracker = SpanTracker()
    provider = TracerProvider()
    provider.add_span_processor(make_span_processor(tracker))
    tracer = provider.get_tracer("t")
    lt = LoopThread(tracer)
    stop = threading.Event()
    ids: dict[str, str] = {}

    def in_span() -> None:
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner") as span:
                ids["inner"] = format(span.get_span_context().span_id, "016x")
                ids["trace"] = format(span.get_span_context().trace_id, "032x")
                known_wait(stop)

    t = threading.Thread(target=in_span, name="spanned")
    t.start()
    try:
        s = Sampler(rate=100, asyncio=True, tracker=tracker, stats=Stats())
        while "inner" not in ids:
            threading.Event().wait(0.01)
        s.sample_once()
        counts = s.drain().counts
    finally:
        stop.set()
        t.join()
        lt.stop()
    links = {k[2] or k[1]: k[4] for k in counts}     # task samples by task, threads by thread
    assert links["spanned"] == (int(ids["trace"], 16), int(ids["inner"], 16))
    task_links = [k[4] for k in counts if k[2] and k[4] is not None]
    assert [format(link[1], "016x") for link in task_links] == [lt.span_ids["in-task"]]
    assert links["loop-thread"] is None
    # ended spans are forgotten
    assert (t.ident or 0) not in tracker.threads


def test_bounded_buffer_counts_drops(waiting_thread: threading.Thread) -> None:
    stats = Stats()
    s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=stats, max_stacks=1)
    s.sample_once()
    s.sample_once()
    counts = s.drain().counts
    assert len(counts) == 1
    assert stats.dropped_samples >= 2 and stats.samples == 2


def test_a_thread_that_has_not_moved_reuses_its_frames(waiting_thread: threading.Thread) -> None:
    """Same top frame at the same instruction: the same captured frames (no
    walk); a span started in that thread since still shows; a thread that
    moved is walked."""
    s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=Stats())
    tid = waiting_thread.ident or 0

    def captured(ident: int) -> Any:
        s.sample_once()
        return [c for c in s._pending[-1][2] if getattr(c[0], "ident", c[0]) == ident][0]

    first, again = captured(tid), captured(tid)
    assert again[1] is first[1] and first[2] is None
    sp = SimpleNamespace(trace_id=5, span_id=6)    # a SpanContext
    s.tracker.threads[tid] = [sp]                   # as if a span had started there
    linked = captured(tid)
    assert linked[2] is sp and linked[1] is first[1]
    me = threading.get_ident()                      # this thread moves between ticks
    a, b = captured(me), captured(me)
    assert a[1] is not b[1]
    counts = s.drain().counts
    waiter = {k[4]: n for k, n in counts.items() if k[1] == "known-waiter"}
    assert waiter == {None: 2, (5, 6): 3}, waiter       # 5 ticks, the span from the 3rd


def test_a_capture_that_cannot_be_named_is_counted_not_fatal() -> None:
    """One odd task-like object in the registry costs its own sample only."""
    stats = Stats()
    s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=stats)
    s.sample_once()

    class NotATask:
        def get_loop(self) -> Any:
            raise RuntimeError("no loop")

    s._pending.append((1, True, [(NotATask(), [known_wait.__code__, 0], None)]))
    counts = s.drain().counts
    assert stats.errors == 1 and sum(counts.values()) == stats.samples > 0

"""What drives the SDK's ticks: SIGPROF from a per-thread timer to the main
thread, the sampler thread's fallbacks, and the rotation over many tasks.

The signal-mode programs run in their own interpreter (the handler belongs to
a process's main thread); they print their findings as JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from telegen.sdk.sampler import Sampler
from telegen.sdk.spans import SpanTracker
from telegen.sdk.stats import Stats
from telegen.sdk.tasks import ChainWalker
from telegen.sdk.turns import NEVER, Turns

ROOT = Path(__file__).resolve().parents[3]
PRELUDE = """
import asyncio, json, os, signal, sys, threading, time
import telegen.sdk
def report(prof, **extra):
    buf = prof.sampler.drain()
    main = threading.main_thread().native_id
    tops = Counter()
    for (tid, _, task, stack, _), n in buf.counts.items():
        if tid == main and not task:
            tops[" > ".join(buf.names[c][0] for c, _ in stack[:3])] += n
    print(json.dumps(dict(stats=prof.stats.as_dict(), signal=prof.sampler.signal_driven,
                          tops=tops.most_common(), **extra)))
from collections import Counter
"""


def run(body: str, timeout: float = 60) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


BUSY_LOOP = """
def work():
    x = 0
    for i in range(2000):
        x += i * i
async def handler():
    while time.monotonic() < end:
        work()
        await asyncio.sleep(0)
async def main():
    await asyncio.gather(*(handler() for _ in range(20)))
prof = telegen.sdk.start(endpoint="127.0.0.1:9", sample_rate=99, asyncio=True,
                         upload_interval=3600, mode=MODE)
t0 = time.monotonic(); end = t0 + 3
asyncio.run(main())
prof.sampler.stop()
report(prof, seconds=time.monotonic() - t0)
"""


def test_one_busy_asyncio_thread_gets_every_tick() -> None:
    """The defect the signal mode fixes: one asyncio thread that yields at
    every ``await`` (and so drops and retakes the GIL at every epoll call)
    can starve a sampler thread; the main thread's SIGPROF handler needs no
    hand-off. The handler's own frames are not in the main thread's stacks."""
    sig = run("MODE = 'auto'\n" + BUSY_LOOP)
    thr = run("MODE = 'thread'\n" + BUSY_LOOP)
    sig_rate = sig["stats"]["ticks"] / sig["seconds"]
    thr_rate = thr["stats"]["ticks"] / thr["seconds"]
    assert sig["signal"] and sig["stats"]["signal_ticks"] == sig["stats"]["ticks"]
    assert sig_rate >= 90, sig["stats"]              # 99 asked
    assert not thr["signal"] and thr["stats"]["signal_ticks"] == 0
    # how starved the thread is depends on the scheduler: 12 of 99 ticks/s on
    # this machine when idle, all 99 when another process keeps a CPU busy
    assert thr_rate > 0, thr["stats"]
    tops = dict(sig["tops"])
    assert not any("telegen.sdk" in t for t in tops), tops
    hot = sum(n for t, n in tops.items() if t.split(" > ")[0].endswith(".work"))
    assert hot > 0.5 * sum(tops.values()), tops      # the loop mostly runs work()


def test_the_sdk_threads_get_their_turns_beside_a_busy_loop() -> None:
    """A loop thread that drops and retakes the GIL at every epoll call
    starves every other thread (CPython's convoy: the waiter never times out
    without a switch): here the uploader and the sampler thread's folds.
    The ticks hand the GIL over when one of them is due, so uploads and
    folds keep time while the loop stays busy. (Counted from the second
    second on: the uploader's imports at start, ~90 ms of CPU and many
    system calls, take ~0.5 s beside this loop.)"""
    from telegen.testing.backends import OtlpBackend

    backend = OtlpBackend().start()
    try:
        out = run(f"""
async def handler():
    while time.monotonic() < end:
        x = 0
        for i in range(2000):
            x += i * i
        await asyncio.sleep(0.001)
async def main():
    await asyncio.gather(*(handler() for _ in range(40)))
    await asyncio.sleep(0)
async def mark():
    await asyncio.sleep(2)
    marks.append(prof.stats.exported_profiles)
async def both():
    await asyncio.gather(main(), mark())
marks = []
prof = telegen.sdk.start(endpoint="127.0.0.1:{backend.port}", sample_rate=99, asyncio=True,
                         upload_interval=0.5)
t0 = time.monotonic(); end = t0 + 5
asyncio.run(both())
exported, pending = prof.stats.exported_profiles - marks[0], len(prof.sampler._pending)
report(prof, exported=exported, pending=pending)
""")
    finally:
        backend.stop()
    st = out["stats"]
    assert out["signal"] and st["ticks"] >= 400, st
    assert out["exported"] >= 4, out            # 6 due in the last 3 s; 0 without turns
    assert out["pending"] <= 60, out            # folded every 0.25 s (25 ticks)
    assert st["gil_handoffs"] > 0, st


def test_turns_bookkeeping_and_a_give_nobody_takes() -> None:
    """``next`` is the earliest time one of the SDK's threads wants the GIL;
    a thread that stops no longer counts; a due thread that waits on
    something else than the GIL gets ever fewer releases, without delaying
    another thread's turn (with one waiting for the GIL a release lets it
    run: any thread, the application's too -- CPython's own fairness, which
    the busy loop had suspended)."""
    turns = Turns()
    assert turns.next == NEVER
    turns.at("uploader", 10.0)
    turns.at("sampler", 0.25)
    soon = turns.next
    assert soon < time.perf_counter_ns() + 0.3e9
    turns.done("sampler")
    assert turns.next > soon + 9e9
    turns.done("uploader")
    assert turns.next == NEVER
    out = run("""
from telegen.sdk.turns import Turns
turns, stop = Turns(), threading.Event()
helper = threading.Thread(target=lambda: (turns.at("helper", 0), stop.wait()))
helper.start()                          # due, but blocked on an event, not on the GIL
time.sleep(0.1)
t0 = time.perf_counter()
gave = [turns.give() for _ in range(200)]
each_us = (time.perf_counter() - t0) * 1e6 / 200
other = threading.Thread(target=lambda: (turns.at("other", 0), stop.wait()))
other.start()                           # due now too, while the helper backs off
time.sleep(0.1)
then = [turns.give() for _ in range(3)]
stop.set()
print(json.dumps(dict(each_us=each_us, gave=gave, then=then)))
""")
    # a few releases (~80 us each here) that the thread does not use, then
    # fewer and fewer: 1, 3, 7, 15, 31, 31, ... due ticks let pass
    assert out["gave"][:3] == [True, False, True], out
    assert sum(out["gave"]) <= 12 and out["each_us"] < 100, out
    # each thread backs off alone: the helper's back-off does not delay the
    # other's first turn (which it does not use either: then it backs off)
    assert out["then"] == [True, False, True], out


def test_thread_mode_when_not_started_from_the_main_thread() -> None:
    out = run("""
box = []
t = threading.Thread(target=lambda: box.append(telegen.sdk.start(
    endpoint="127.0.0.1:9", upload_interval=3600)))
t.start(); t.join()
time.sleep(1.0)
prof = box[0]
prof.sampler.stop()
report(prof, default=signal.getsignal(signal.SIGPROF) == signal.SIG_DFL)
""")
    assert not out["signal"] and out["default"]
    assert 60 <= out["stats"]["ticks"] <= 110, out["stats"]


def test_an_existing_sigprof_handler_is_left_alone() -> None:
    out = run("""
got = []
signal.signal(signal.SIGPROF, lambda s, f: got.append(s))
prof = telegen.sdk.start(endpoint="127.0.0.1:9", upload_interval=3600, mode="auto")
time.sleep(0.6)
prof.sampler.stop()
report(prof, got=len(got), ours=signal.getsignal(signal.SIGPROF).__name__)
""")
    assert not out["signal"] and out["got"] == 0 and out["ours"] == "<lambda>"
    assert out["stats"]["ticks"] > 30


def test_a_handler_set_later_by_the_application_takes_over() -> None:
    """The timer is deleted once the supervisor sees another SIGPROF handler
    (within ~0.25 s), so the application's handler is not fed our ticks, and
    the sampler thread goes on sampling."""
    out = run("""
prof = telegen.sdk.start(endpoint="127.0.0.1:9", upload_interval=3600)
time.sleep(0.5)
before = prof.stats.signal_ticks
got = []
signal.signal(signal.SIGPROF, lambda s, f: got.append(s))
time.sleep(0.6)
settled = len(got)
t_ticks = prof.stats.ticks
time.sleep(1.0)
prof.sampler.stop()
report(prof, before=before, settled=settled, later=len(got) - settled,
       thread_ticks=prof.stats.ticks - t_ticks)
""")
    assert out["before"] >= 40 and not out["signal"]
    assert out["settled"] <= 40 and out["later"] == 0, out      # at most ~0.35 s of ticks
    assert out["thread_ticks"] >= 60, out


def test_main_thread_blocked_in_c_the_thread_samples() -> None:
    """A read restarted by the kernel (SA_RESTART) never returns to Python, so
    no handler runs: after ``_STALL`` the sampler thread samples, and the main
    thread's stack shows where it is blocked."""
    out = run("""
def blocked_reader(fd):
    return os.read(fd, 1)
r, w = os.pipe()
threading.Timer(1.5, lambda: os.write(w, b"x")).start()
prof = telegen.sdk.start(endpoint="127.0.0.1:9", upload_interval=3600)
time.sleep(0.3)
sig0 = prof.stats.signal_ticks
t0 = time.monotonic()
blocked_reader(r)
blocked_s = time.monotonic() - t0
signal_during = prof.stats.signal_ticks - sig0
time.sleep(0.3)
prof.sampler.stop()
report(prof, blocked_s=blocked_s, signal_during=signal_during)
""")
    st = out["stats"]
    thread_ticks = st["ticks"] - st["signal_ticks"]
    assert out["signal"] and out["signal_during"] <= 2, out
    assert thread_ticks >= 0.8 * 99 * (out["blocked_s"] - 0.3), out
    tops = dict(out["tops"])
    assert any(t.split(" > ")[0].endswith(".blocked_reader") for t in tops), tops


def test_exit_without_stop_is_clean() -> None:
    """The timer is deleted at exit, before the interpreter resets SIGPROF to
    its default action (which would kill the process)."""
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", (
            "import time, telegen.sdk\n"
            "telegen.sdk.start(endpoint='127.0.0.1:9', upload_interval=3600, sample_rate=1000)\n"
            "time.sleep(0.2)\n")], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert proc.returncode == 0, (proc.returncode, proc.stderr)


def test_counting_in_the_main_thread_while_ticks_come() -> None:
    """fold() and drain() called from the main thread take the lock the tick
    takes: a tick that interrupts them skips instead of waiting for itself
    (which would hang the application)."""
    out = run("""
prof = telegen.sdk.start(endpoint="127.0.0.1:9", upload_interval=3600, sample_rate=1000)
end, rounds, samples = time.monotonic() + 1.5, 0, 0
while time.monotonic() < end:
    prof.sampler.fold()
    samples += sum(prof.sampler.drain().counts.values())
    rounds += 1
prof.sampler.stop()
print(json.dumps(dict(rounds=rounds, samples=samples, stats=prof.stats.as_dict())))
""", timeout=30)
    assert out["rounds"] > 1000 and out["stats"]["signal_ticks"] > 500, out
    assert out["samples"] > 500 and out["stats"]["errors"] == 0, out


# coroutines parked on a future, told apart by their names in the samples
async def park_a(f: asyncio.Future[None]) -> None:
    await f


async def park_b(f: asyncio.Future[None]) -> None:
    await f


async def park_c(f: asyncio.Future[None]) -> None:
    await f


async def short(f: asyncio.Future[None]) -> None:
    await f


def test_tasks_in_rotation_keep_their_shares() -> None:
    """With more tasks than ``max_tasks``, each tick visits a slice of them
    and counts each sample for the ticks it stands for: over whole rounds
    every task has exactly one count per tick."""
    walker = ChainWalker(max_tasks=4)
    tracker = SpanTracker()
    counts: Counter[str] = Counter()
    per_tick: list[int] = []
    ticks: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in range(12)]
        kinds = [park_a] * 6 + [park_b] * 4 + [park_c] * 2
        tasks = [asyncio.ensure_future(k(f)) for k, f in zip(kinds, futs, strict=True)]
        await asyncio.sleep(0)
        # 12 tasks + main (+ any tasks of earlier tests not yet collected):
        # a weight w >= 4, and w ticks go round once
        weights = [walker.tick(tracker, [])]
        walker._next = weights[0]              # the next tick starts a round
        for _ in range(3 * weights[0]):
            out: list[Any] = []
            weight = walker.tick(tracker, out)
            weights.append(weight)
            per_tick.append(len(out))
            for _task, frames, _link in out:
                counts[frames[-2].co_name] += weight           # the innermost coroutine
        ticks.append(len(weights) - 1)
        assert len(set(weights)) == 1 and weights[0] >= 4, weights
        for f in futs:
            f.set_result(None)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    n = ticks[0]
    assert max(per_tick) <= 4
    assert counts["park_a"] == 6 * n and counts["park_b"] == 4 * n \
        and counts["park_c"] == 2 * n, counts


def test_short_lived_tasks_keep_their_share_in_rotation() -> None:
    """Tasks that live fewer ticks than a rotation round (a server's
    requests) are still counted, in expectation, for the ticks they lived:
    each tick draws its slice from the tasks alive at that tick."""
    walker = ChainWalker(max_tasks=2)
    tracker = SpanTracker()
    counted: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in range(10)]
        longs = [asyncio.ensure_future(park_a(f)) for f in futs]
        live: list[tuple[asyncio.Future[None], asyncio.Future[None]]] = []
        total = 0
        for _ in range(TICKS):
            f = loop.create_future()
            live.append((asyncio.ensure_future(short(f)), f))
            if len(live) > 2:                   # each short task lives two ticks
                task, done = live.pop(0)
                done.set_result(None)
                await task
            await asyncio.sleep(0)
            out: list[Any] = []
            weight = walker.tick(tracker, out)  # 13 tasks, 2 a tick: rounds of 7
            total += weight * sum(1 for _t, frames, _l in out if frames[-2].co_name == "short")
        counted.append(total)
        for f in futs + [f for _, f in live]:
            f.set_result(None)
        await asyncio.gather(*longs, *(t for t, _ in live))

    TICKS = 700
    asyncio.run(main())
    assert 0.7 * 2 * TICKS < counted[0] < 1.3 * 2 * TICKS, counted     # 2 alive at each tick


def test_weighted_samples_are_counted_and_bounded() -> None:
    stats = Stats()
    s = Sampler(rate=100, asyncio=False, tracker=SpanTracker(), stats=stats, max_stacks=2)
    counts: Counter[Any] = Counter()
    keys: list[Any] = [(1, "", "", ((1, 0),), None), (2, "", "", ((2, 0),), None),
                       (3, "", "", ((3, 0),), None)]
    s._folder.add(counts, keys, 3)
    s._folder.add(counts, keys[:1], 1)
    assert counts == {keys[0]: 4, keys[1]: 3}
    assert stats.samples == 7 and stats.dropped_samples == 3


def test_a_forked_child_profiles_itself() -> None:
    """Pre-forking servers (gunicorn --preload): the parent's sampler threads
    and timer do not survive fork; the child starts its own, signal-driven,
    keeping the span processor; the parent goes on."""
    out = run("""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("t")
prof = telegen.sdk.start(endpoint="127.0.0.1:9", upload_interval=3600)
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(i * i for i in range(1000))
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    with tracer.start_as_current_span("in-child") as span:
        spin(1.0)
        child = telegen.sdk._profiler
        buf = child.sampler.drain()
        links = {k[4] for k in buf.counts if k[4]}
    os.write(w, json.dumps(dict(
        new=child is not prof, signal=child.sampler.signal_driven, ticks=child.stats.ticks,
        span=[span.get_span_context().span_id] == [l[1] for l in links])).encode())
    os._exit(0)
spin(1.0)
_, status = os.waitpid(pid, 0)
child = json.loads(os.read(r, 10000))
prof.sampler.stop()
report(prof, child=child, status=status)
""")
    assert out["status"] == 0 and out["signal"]
    child = out["child"]
    assert child["new"] and child["signal"] and child["span"], child
    assert 80 <= child["ticks"] <= 110, child
    assert out["stats"]["ticks"] >= 80, out["stats"]        # the parent: 1 s of it at 99 Hz

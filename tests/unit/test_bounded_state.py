"""What the agent keeps per process or per label value is bounded (#21):
the telemetry registry's series per metric, and ProcessCache's entries of
processes that exited — with their exit seen or not."""

from __future__ import annotations

import os
import subprocess
import sys

from telegen.procinfo import ProcessCache
from telegen.telemetry import OVERFLOW_LABEL, Registry, sum_series


def test_series_beyond_the_limit_share_one_overflow_series_per_component() -> None:
    reg = Registry(max_series_per_metric=10)
    for i in range(500):       # a label fed by process names on a churning host
        reg.counter("ebpf_unwind_full", process=f"job-{i}", kind="receiver",
                    component="ebpf/a").add(1)
        reg.counter("ebpf_unwind_full", process=f"job-{i}", kind="receiver",
                    component="ebpf/b").add(2)
    snap = reg.snapshot()
    assert reg.series_count() <= 12
    assert sum_series(snap, "ebpf_unwind_full") == 1500          # nothing lost
    assert sum_series(snap, "ebpf_unwind_full", component="ebpf/b") == 1000
    overflow = {k: v for k, v in snap.items() if f'{OVERFLOW_LABEL}="true"' in k}
    assert overflow and all('process="' not in k for k in overflow)
    # a series made before the limit keeps counting in place
    reg.counter("ebpf_unwind_full", process="job-0", kind="receiver", component="ebpf/a").add(5)
    assert reg.snapshot()['ebpf_unwind_full{component="ebpf/a",kind="receiver",'
                          'process="job-0"}'] == 6
    assert "otel_metric_overflow" in reg.prometheus_text()


def test_limit_is_per_metric_name() -> None:
    reg = Registry(max_series_per_metric=3)
    for i in range(3):
        reg.gauge("a", x=str(i)).set(1)
    reg.gauge("b", x="0").set(7)
    assert reg.snapshot()['b{x="0"}'] == 7


def _short_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_exited_process_without_an_exit_event_is_released() -> None:
    cache = ProcessCache(maxsize=64)
    released: list[int] = []
    cache.on_release(released.extend)
    child = _short_process()
    try:
        assert cache.capture(child.pid) is not None
        assert cache.capture(os.getpid()) is not None
    finally:
        child.kill()
        child.wait()
    # its exit event was lost: nobody called mark_exited
    assert cache.release_exited() == 0 and child.pid in cache      # found gone, marked
    assert cache.release_exited() == 0 and child.pid in cache      # the window with its samples
    assert cache.release_exited() == 1 and child.pid not in cache
    assert released == [child.pid] and os.getpid() in cache and cache.released == 1


def test_release_listeners_hear_marked_exits_and_one_failing_does_not_stop_others() -> None:
    cache = ProcessCache(maxsize=64)
    heard: list[list[int]] = []

    def broken(pids: list[int]) -> None:
        raise RuntimeError("listener bug")

    cache.on_release(broken)
    cache.on_release(heard.append)
    children = [_short_process() for _ in range(3)]
    for c in children:
        cache.capture(c.pid)
        c.kill()
        c.wait()
        cache.mark_exited(c.pid)
    cache.release_exited()
    cache.release_exited()
    assert sorted(p for batch in heard for p in batch) == sorted(c.pid for c in children)
    assert len(cache) == 0


def test_exec_is_heard_by_listeners_at_the_next_release() -> None:
    """A process that replaced its image: listeners drop its per-process
    state (of the old image) at the next release, in the releasing thread."""
    cache = ProcessCache(maxsize=64)
    heard: list[list[int]] = []
    cache.on_release(heard.append)
    me = os.getpid()
    assert cache.capture(me) is not None
    cache.invalidate(me)
    assert heard == [] and me not in cache          # not in the caller's thread
    assert cache.release_exited() == 0 and heard == [[me]]
    cache.release_exited()
    assert heard == [[me]]                          # told once
    cache.invalidate(me)                            # unknown now: nothing to tell
    cache.release_exited()
    assert heard == [[me]]


def test_filter_forgets_frames_of_processes_no_longer_seen() -> None:
    """Each short process maps the same binary at its own address: its frames
    are new objects; the filter keeps those of the last two batches only."""
    import logging

    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.pdata import CPU, Frame, FrameKind, Line, Mapping, Profile, Profiles
    from telegen.processors.filter.config import FilterConfig
    from telegen.processors.filter.filter import FilterProcessor
    from telegen.testing.sink import Sink

    reg = Registry()
    settings = CreateSettings(ComponentID("filter"), Kind.PROCESSOR,
                              reg.for_component("processor", "filter"), logging.getLogger("t"))
    sink = Sink()
    proc = FilterProcessor(settings, FilterConfig(exclude_patterns=["runtime.*"]), sink)
    kept = Frame(FrameKind.NATIVE, 0x1000, None, (Line("main.main"),))
    for process in range(200):              # one batch per short process
        base = 0x5500_0000_0000 + process * 0x10_0000
        m = Mapping(start=base, limit=base + 0x1000, offset=0, file="/usr/bin/job")
        p = Profile(name="cpu", sample_types=CPU)
        for i in range(50):
            hidden = Frame(FrameKind.NATIVE, base + i, m, (Line(f"runtime.f{i}"),))
            mine = Frame(FrameKind.NATIVE, base + 0x800 + i, m, (Line(f"main.g{i}"),))
            p.add((hidden, mine, kept), [1, 10])
        proc.consume(Profiles([p]))
    memo = len(proc._memo) + len(proc._memo_old)
    assert memo <= 2 * (100 + 1), memo          # two batches' frames, not 200 processes'
    out = sink.profiles()[-1]
    assert all(not f.name.startswith("runtime.") for s in out for f in s.stack)
    assert kept in proc._memo_old               # seen every batch: kept

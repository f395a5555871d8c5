from __future__ import annotations

import logging

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import CPU, Frame, FrameKind, Line, Mapping, Profile, Profiles
from telegen.processors.filter.config import FilterConfig
from telegen.processors.filter.filter import FilterProcessor
from telegen.telemetry import Registry
from telegen.testing.sink import Sink


def _settings(reg: Registry) -> CreateSettings:
    return CreateSettings(ComponentID("filter"), Kind.PROCESSOR,
                          reg.for_component("processor", "filter"), logging.getLogger("t"))


def _f(*names: str) -> Frame:
    return Frame(FrameKind.GO, hash(names) & 0xFFFF, None, tuple(Line(n) for n in names))


def test_hidden_frames_charge_time_to_nearest_kept_caller() -> None:
    reg = Registry()
    sink = Sink()
    proc = FilterProcessor(_settings(reg), FilterConfig(exclude_patterns=["runtime.*"]), sink)
    p = Profile(name="cpu", sample_types=CPU)
    p.add((_f("runtime.mallocgc"), _f("main.alloc"), _f("main.main")), [3, 30])
    p.add((_f("main.alloc"), _f("main.main")), [1, 10])
    p.add((_f("runtime.gcBgMarkWorker"),), [2, 20])
    # an inlined runtime function inside a user frame keeps the user line
    p.add((_f("runtime.memmove", "main.copy"), _f("main.main")), [1, 10])
    proc.consume(Profiles([p]))
    out = sink.profiles()[0]
    assert out.totals() == [7, 70]          # no time lost
    by_stack = {tuple(f.name for f in s.stack): s.values for s in out}
    assert by_stack[("main.alloc", "main.main")] == [4, 40]   # merged after hiding
    assert by_stack[()] == [2, 20]
    assert by_stack[("main.copy", "main.main")] == [1, 10]
    names = {ln.function for s in out for f in s.stack for ln in f.lines}
    assert not any(n.startswith("runtime.") for n in names)
    hidden = 'processor_filter_frames_hidden{component="filter",kind="processor"}'
    assert reg.snapshot()[hidden] == 3


def test_min_samples_drops_rare_stacks_and_counts_them() -> None:
    reg = Registry()
    sink = Sink()
    proc = FilterProcessor(_settings(reg), FilterConfig(min_samples=3), sink)
    p = Profile(name="cpu", sample_types=CPU)
    p.add((_f("hot"),), [5, 50])
    p.add((_f("cold"),), [2, 20])
    proc.consume(Profiles([p]))
    out = sink.profiles()[0]
    assert [s.stack[0].name for s in out] == ["hot"]
    assert reg.snapshot()['processor_dropped_samples{component="filter",kind="processor"}'] == 1


def test_unsymbolized_frames_match_on_fallback_name() -> None:
    sink = Sink()
    proc = FilterProcessor(_settings(Registry()), FilterConfig(exclude_patterns=["libc.so*"]), sink)
    m = Mapping(start=0x1000, limit=0x9000, file="/lib/libc.so.6")
    p = Profile(name="cpu", sample_types=CPU)
    p.add((Frame(FrameKind.NATIVE, 0x1010, m), _f("main")), [1, 1])
    proc.consume(Profiles([p]))
    assert [f.name for f in next(iter(sink.profiles()[0])).stack] == ["main"]

from __future__ import annotations

import logging

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import CPU, OFF_CPU, Frame, FrameKind, Line, Profile, Profiles
from telegen.processors.batch.batch import BatchProcessor
from telegen.processors.batch.config import BatchConfig
from telegen.telemetry import Registry
from telegen.testing.sink import Sink


def _settings(reg: Registry) -> CreateSettings:
    return CreateSettings(ComponentID("batch"), Kind.PROCESSOR,
                          reg.for_component("processor", "batch"), logging.getLogger("t"))


def _window(name: str, start: int, pid: int = 1) -> Profile:
    types = CPU if name == "cpu" else OFF_CPU
    p = Profile(name=name, sample_types=types, start_ns=1000 + start, duration_ns=10,
                resource={"host.name": "h", "pid": pid})
    p.add((Frame(FrameKind.NATIVE, 1, None, (Line("f"),)),), [1, 100])
    p.add((Frame(FrameKind.NATIVE, 2, None, (Line("g"),)),), [2, 200])
    return p


def test_merges_same_type_and_resource_until_shutdown() -> None:
    sink = Sink()
    b = BatchProcessor(_settings(Registry()), BatchConfig(timeout=3600), sink)
    b.start(host=None)  # type: ignore[arg-type]
    for start in (0, 10, 20):
        b.consume(Profiles([_window("cpu", start), _window("off_cpu", start)]))
    b.consume(Profiles([_window("cpu", 30, pid=2)]))
    assert sink.batches == []
    b.shutdown()
    out = sink.profiles()
    assert sorted((p.name, p.resource["pid"]) for p in out) == [
        ("cpu", 1), ("cpu", 2), ("off_cpu", 1)]
    cpu1 = next(p for p in out if p.name == "cpu" and p.resource["pid"] == 1)
    assert len(cpu1) == 2 and cpu1.totals() == [9, 900]
    assert (cpu1.start_ns, cpu1.duration_ns) == (1000, 30)


def test_timeout_flushes() -> None:
    sink = Sink()
    b = BatchProcessor(_settings(Registry()), BatchConfig(timeout=0.05), sink)
    b.start(host=None)  # type: ignore[arg-type]
    b.consume(Profiles([_window("cpu", 0)]))
    assert sink.wait_for(1, timeout_s=5)
    b.shutdown()
    assert sum(p.totals()[0] for p in sink.profiles()) == 3


def test_size_cap_sends_early() -> None:
    reg = Registry()
    sink = Sink()
    b = BatchProcessor(_settings(reg), BatchConfig(timeout=3600, send_batch_max_size=2), sink)
    b.start(host=None)  # type: ignore[arg-type]
    b.consume(Profiles([_window("cpu", 0)]))
    assert len(sink.batches) == 1
    b.shutdown()
    snap = reg.snapshot()
    assert snap['processor_batch_size_trigger_send{component="batch",kind="processor"}'] == 1


def test_downstream_failure_is_counted_not_raised() -> None:
    class Broken:
        mutates_data = False

        def consume(self, profiles: Profiles) -> None:
            raise OSError("disk full")

    reg = Registry()
    b = BatchProcessor(_settings(reg), BatchConfig(timeout=3600), Broken())
    b.consume(Profiles([_window("cpu", 0)]))
    b.shutdown()
    assert reg.snapshot()['processor_dropped_samples{component="batch",kind="processor"}'] == 2

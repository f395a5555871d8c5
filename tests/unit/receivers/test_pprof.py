from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, CreateSettings, Kind
from telegen.config.schema import build_component_config
from telegen.formats.pprof import encode
from telegen.receivers.pprof.config import PprofReceiverConfig
from telegen.receivers.pprof.receiver import PprofReceiver
from telegen.telemetry import Registry
from telegen.testing.pprof_checks import synthetic_profiles
from telegen.testing.sink import Sink

TESTDATA = Path(__file__).resolve().parents[2] / "testdata" / "pprof"


def _receiver(reg: Registry, sink: Sink, **cfg: object) -> PprofReceiver:
    config = PprofReceiverConfig(**cfg)  # type: ignore[arg-type]
    config.validate()
    settings = CreateSettings(ComponentID("pprof"), Kind.RECEIVER,
                              reg.for_component("receiver", "pprof"), logging.getLogger("t"))
    return PprofReceiver(settings, config, sink)


def _count(reg: Registry, name: str) -> float:
    return reg.snapshot().get(f'{name}{{component="pprof",kind="receiver"}}', 0)


def _populate(d: Path) -> None:
    for name in ("go-cpu.pb.gz", "go-heap.pb.gz", "garbage.pb.gz"):
        shutil.copy(TESTDATA / name, d / name)


def test_reads_good_files_and_skips_garbage(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    _populate(tmp_path)
    reg, sink = Registry(), Sink()
    rx = _receiver(reg, sink, paths=[str(tmp_path / "*.pb.gz")])
    with caplog.at_level(logging.WARNING):
        rx.start(host=None)  # type: ignore[arg-type]
        assert sink.wait_for(2, timeout_s=10)
        rx.shutdown()
    names = sorted(p.name for p in sink.profiles())
    assert names == ["cpu", "inuse"]
    assert _count(reg, "receiver_refused_files") == 1
    assert _count(reg, "receiver_accepted_profiles") == 2
    assert _count(reg, "receiver_accepted_samples") == sum(len(p) for p in sink.profiles())
    assert "garbage.pb.gz" in caplog.text
    # read once: another pass finds nothing new
    assert rx.scan() == 0
    assert len(sink.batches) == 2


def test_watch_waits_for_a_stable_file_and_rereads_changes(tmp_path: Path) -> None:
    reg, sink = Registry(), Sink()
    rx = _receiver(reg, sink, paths=[str(tmp_path / "**" / "*.pb.gz")], watch=True)
    assert rx.scan(first=True) == 0
    sub = tmp_path / "app"
    sub.mkdir()
    target = sub / "cpu.pb.gz"
    data = encode(synthetic_profiles()[0])
    target.write_bytes(data[: len(data) // 2])          # half written
    assert rx.scan(first=False) == 0                     # seen, not yet stable
    target.write_bytes(data)                             # writer finished
    os.utime(target, ns=(1, 2))
    assert rx.scan(first=False) == 0                     # changed again: wait
    assert rx.scan(first=False) == 1                     # stable for one poll: read
    assert _count(reg, "receiver_refused_files") == 0
    assert sink.profiles()[0].resource["host.name"] == "web-1"
    assert rx.scan(first=False) == 0
    os.utime(target, ns=(3, 4))                          # rewritten: read again
    rx.scan(first=False)
    assert rx.scan(first=False) == 1
    assert len(sink.profiles()) == 2


def test_watch_thread_picks_up_new_files_and_stops(tmp_path: Path) -> None:
    reg, sink = Registry(), Sink()
    rx = _receiver(reg, sink, paths=[str(tmp_path / "*.pb.gz")], watch=True,
                   poll_interval=0.02)
    rx.start(host=None)  # type: ignore[arg-type]
    try:
        shutil.copy(TESTDATA / "go-cpu.pb.gz", tmp_path / "late.pb.gz")
        assert sink.wait_for(1, timeout_s=10)
    finally:
        rx.shutdown(timeout_s=5)
    assert not any(t.name == "receiver-pprof" for t in threading.enumerate())
    assert sink.profiles()[0].name == "cpu"


def test_delete_after_read_removes_only_good_files(tmp_path: Path) -> None:
    _populate(tmp_path)
    reg, sink = Registry(), Sink()
    rx = _receiver(reg, sink, paths=[str(tmp_path / "*.gz")], delete_after_read=True)
    assert rx.scan() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pb.gz"]
    assert len(sink.profiles()) == 2


def test_consumer_failure_is_counted_and_file_kept(tmp_path: Path) -> None:
    shutil.copy(TESTDATA / "go-cpu.pb.gz", tmp_path / "a.pb.gz")

    class Refusing:
        mutates_data = False

        def consume(self, profiles: object) -> None:
            raise RuntimeError("backend down")

    reg = Registry()
    rx = _receiver(reg, Refusing(), paths=[str(tmp_path / "*")],  # type: ignore[arg-type]
                   delete_after_read=True)
    assert rx.scan() == 1
    assert _count(reg, "receiver_refused_samples") > 0
    assert _count(reg, "receiver_accepted_profiles") == 0
    assert (tmp_path / "a.pb.gz").exists()


def test_config_through_schema_and_factory() -> None:
    factory = registry.get(Kind.RECEIVER, "pprof")
    assert factory is not None
    cfg = build_component_config(factory, {"paths": ["/tmp/x/*.pb.gz"], "watch": True,
                                           "poll_interval": "500ms"}, "receivers::pprof")
    assert cfg.poll_interval == pytest.approx(0.5)
    assert cfg.watch and not cfg.delete_after_read
    with pytest.raises(ConfigError, match="paths"):
        build_component_config(factory, {}, "receivers::pprof")
    with pytest.raises(ConfigError, match="paths"):
        build_component_config(factory, {"paths": []}, "receivers::pprof")
    with pytest.raises(ConfigError):
        build_component_config(factory, {"paths": ["x"], "colour": "red"}, "receivers::pprof")

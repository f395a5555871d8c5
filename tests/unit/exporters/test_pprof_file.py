from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, CreateSettings, Kind
from telegen.config.schema import build_component_config
from telegen.exporters.pprof_file.config import PprofFileConfig
from telegen.exporters.pprof_file.exporter import PprofFileExporter
from telegen.formats.pprof import decode
from telegen.pdata import CPU, OFF_CPU, Frame, FrameKind, Line, Profile, Profiles
from telegen.telemetry import Registry

T0 = 1_700_000_000_000_000_000


def _exporter(reg: Registry, directory: Path, **cfg: object) -> PprofFileExporter:
    config = PprofFileConfig(directory=str(directory), **cfg)  # type: ignore[arg-type]
    config.validate()
    settings = CreateSettings(ComponentID("pprof_file"), Kind.EXPORTER,
                              reg.for_component("exporter", "pprof_file"),
                              logging.getLogger("t"))
    exp = PprofFileExporter(settings, config)
    exp.start(host=None)  # type: ignore[arg-type]
    return exp


def _count(reg: Registry, name: str) -> float:
    return reg.snapshot().get(f'{name}{{component="pprof_file",kind="exporter"}}', 0)


def _window(name: str, pid: int, start: int = T0, n: int = 3) -> Profile:
    p = Profile(name=name, sample_types=CPU if name == "cpu" else OFF_CPU, start_ns=start,
                duration_ns=10**10, resource={"host.name": "h1", "process.pid": pid})
    for i in range(n):
        p.add((Frame(FrameKind.NATIVE, 0x10 + i, None, (Line(f"f{i}"),)),), [1, 10 * (i + 1)])
    return p


def test_one_file_per_type_with_differing_resource_as_labels(tmp_path: Path) -> None:
    reg = Registry()
    exp = _exporter(reg, tmp_path / "out")
    batch = Profiles([_window("cpu", 1), _window("cpu", 2, start=T0 + 5), _window("off_cpu", 1)])
    exp.consume(batch)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["cpu-20231114T221320Z-0.pb.gz", "off_cpu-20231114T221320Z-1.pb.gz"]
    cpu = decode((tmp_path / "out" / files[0]).read_bytes())
    assert cpu.resource == {"host.name": "h1"}
    assert sorted({dict(s.labels)["process.pid"] for s in cpu}) == [1, 2]
    assert len(cpu) == 6 and cpu.totals() == [6, 120]
    assert (cpu.start_ns, cpu.end_ns) == (T0, T0 + 5 + 10**10)
    off = decode((tmp_path / "out" / files[1]).read_bytes())
    assert off.resource == {"host.name": "h1", "process.pid": 1}
    assert _count(reg, "exporter_files_written") == 2
    assert _count(reg, "exporter_sent_samples") == 9
    # the input was not touched (mutates_data = False)
    assert batch.profiles[0].resource["process.pid"] == 1
    assert all(not dict(s.labels) for s in batch.profiles[0])


def test_write_is_atomic_temp_then_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    exp = _exporter(Registry(), tmp_path)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        assert Path(src).parent == Path(dst).parent == tmp_path
        assert Path(src).name.startswith(".")           # hidden temp name
        assert not Path(dst).exists()                    # target appears only now
        assert len(decode(Path(src).read_bytes())) == 3  # and is already complete
        replaced.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    exp.consume(Profiles([_window("cpu", 1)]))
    assert len(replaced) == 1
    assert [p.name for p in tmp_path.iterdir()] == [Path(replaced[0][1]).name]


def test_write_failure_is_counted_and_raised(tmp_path: Path) -> None:
    reg = Registry()
    out = tmp_path / "out"
    exp = _exporter(reg, out)
    out.rmdir()
    out.write_text("a file where the directory was")
    with pytest.raises(OSError):
        exp.consume(Profiles([_window("cpu", 1)]))
    assert _count(reg, "exporter_send_failed_samples") == 3
    assert _count(reg, "exporter_files_written") == 0


def test_retention_by_count_keeps_newest_and_foreign_files(tmp_path: Path) -> None:
    reg = Registry()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "cpu-latest.pb.gz").write_bytes(b"not ours")
    exp = _exporter(reg, tmp_path, max_files=3)
    for i in range(5):
        exp.consume(Profiles([_window("cpu", 1, start=T0 + i * 10**10)]))
    ours = sorted(p.name for p in tmp_path.glob("cpu-2023*"))
    assert ours == ["cpu-20231114T221340Z-2.pb.gz", "cpu-20231114T221350Z-3.pb.gz",
                    "cpu-20231114T221400Z-4.pb.gz"]
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "cpu-latest.pb.gz").exists()
    assert _count(reg, "exporter_files_deleted") == 2


def test_retention_by_bytes_and_seq_continues_after_restart(tmp_path: Path) -> None:
    reg = Registry()
    probe = _exporter(reg, tmp_path / "probe")
    probe.consume(Profiles([_window("cpu", 1)]))
    size = next((tmp_path / "probe").iterdir()).stat().st_size
    exp = _exporter(reg, tmp_path / "out", max_bytes=int(size * 2.5))
    for i in range(4):
        exp.consume(Profiles([_window("cpu", 1, start=T0 + i)]))
    assert len(list((tmp_path / "out").iterdir())) == 2
    again = _exporter(Registry(), tmp_path / "out")
    again.consume(Profiles([_window("cpu", 1)]))
    assert (tmp_path / "out" / "cpu-20231114T221320Z-4.pb.gz").exists()
    tiny = _exporter(Registry(), tmp_path / "tiny", max_bytes=1)
    tiny.consume(Profiles([_window("cpu", 1)]))
    tiny.consume(Profiles([_window("cpu", 1)]))
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == ["cpu-20231114T221320Z-1.pb.gz"]


@pytest.mark.parametrize(("raw", "message"), [
    ({"filename": "{type}.pb.gz"}, "{seq}"),
    ({"filename": "sub/{type}-{seq}.pb.gz"}, "'/'"),
    ({"filename": "{type}-{host}-{seq}.pb.gz"}, "placeholders"),
    ({"max_files": -1}, "max_files"),
    ({"compression": "zstd"}, "compression"),
])
def test_config_errors(raw: dict[str, object], message: str) -> None:
    factory = registry.get(Kind.EXPORTER, "pprof_file")
    assert factory is not None
    with pytest.raises(ConfigError) as info:
        build_component_config(factory, raw, "exporters::pprof_file")
    assert message in str(info.value)


def test_config_defaults() -> None:
    factory = registry.get(Kind.EXPORTER, "pprof_file")
    assert factory is not None
    cfg = build_component_config(factory, {}, "exporters::pprof_file")
    assert (cfg.directory, cfg.max_files, cfg.max_bytes) == ("./profiles", 0, 0)
    assert cfg.name_regex().fullmatch("off_cpu-20240101T000000Z-12.pb.gz")
    assert not cfg.name_regex().fullmatch(".off_cpu-20240101T000000Z-12.pb.gz.x.tmp")

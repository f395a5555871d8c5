from __future__ import annotations

import logging

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, CreateSettings, Kind
from telegen.config.schema import build_component_config
from telegen.exporters.console.config import ConsoleConfig
from telegen.exporters.console.console import ConsoleExporter
from telegen.pdata import ALLOC, CPU, Frame, FrameKind, Line, Profile, Profiles
from telegen.telemetry import Registry

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def fn(name: str) -> Frame:
    return Frame(FrameKind.NATIVE, 0, None, (Line(name),))


def _exporter(reg: Registry, **cfg: object) -> ConsoleExporter:
    config = ConsoleConfig(**cfg)  # type: ignore[arg-type]
    config.validate()
    return ConsoleExporter(CreateSettings(ComponentID("console"), Kind.EXPORTER,
                                          reg.for_component("exporter", "console"),
                                          logging.getLogger("t")), config)


def _cpu(pid: int, hot_ms: int) -> Profile:
    p = Profile(name="cpu", sample_types=CPU, start_ns=T0, duration_ns=10**10,
                resource={"host.name": "h", "process.pid": pid})
    p.add((fn("main.hot"), fn("main.main")), [hot_ms // 10, hot_ms * MS])
    p.add((fn("runtime.mallocgc"), fn("main.main")), [2, 20 * MS])
    return p


def test_prints_one_table_per_type_merged_across_resources(
        capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry()
    alloc = Profile(name="alloc", sample_types=ALLOC, start_ns=T0, duration_ns=10**10)
    alloc.add((fn("bytes.makeSlice"),), [3, 350 * 2**20])
    _exporter(reg).consume(Profiles([_cpu(1, 300), _cpu(2, 100), alloc]))
    out = capsys.readouterr().out
    assert out == (
        "== cpu profile: 2023-11-14 22:13:20 UTC + 10s, 2 resources, 4 samples ==\n"
        "Total CPU time: 440ms\n"
        "\n"
        "Flat      Flat%   Sum%    Cum       Cum%    Name\n"
        "400ms     90.9%   90.9%   400ms     90.9%   main.hot\n"
        " 40ms      9.1%   100.0%  40ms       9.1%   runtime.mallocgc\n"
        "    0      0.0%   100.0%  440ms     100.0%  main.main\n"
        "\n"
        "== alloc profile: 2023-11-14 22:13:20 UTC + 10s, 1 resource, 1 samples ==\n"
        "Total allocations: 350MB\n"
        "\n"
        "Flat      Flat%   Sum%    Cum       Cum%    Name\n"
        "350MB     100.0%  100.0%  350MB     100.0%  bytes.makeSlice\n"
    )
    snap = reg.snapshot()
    assert snap['exporter_sent_samples{component="console",kind="exporter"}'] == 5


def test_top_sample_type_and_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    exp = _exporter(Registry(), top=1, sample_type="samples", output="stderr")
    exp.consume(Profiles([_cpu(1, 300)]))
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[1] == "Total samples: 32"
    assert lines[4].startswith("  30      93.8%   93.8%   30  ") and lines[4].endswith("main.hot")
    assert len(lines) == 5
    alloc = Profile(name="alloc", sample_types=ALLOC)
    alloc.add((fn("f"),), [1, 2048])
    exp.consume(Profiles([alloc]))                       # no "samples" column: default
    err = capsys.readouterr().err
    assert "== alloc profile: time unknown, 1 resource, 1 samples ==" in err
    assert "Total allocations: 2kB" in err


def test_empty_window_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _exporter(Registry()).consume(Profiles([Profile(name="cpu", sample_types=CPU)]))
    assert capsys.readouterr().out == ""


def test_config_schema() -> None:
    factory = registry.get(Kind.EXPORTER, "console")
    assert factory is not None
    cfg = build_component_config(factory, {"top": 5}, "exporters::console")
    assert (cfg.top, cfg.sample_type, cfg.output) == (5, "", "stdout")
    with pytest.raises(ConfigError, match="output"):
        build_component_config(factory, {"output": "file"}, "exporters::console")
    with pytest.raises(ConfigError, match="top"):
        build_component_config(factory, {"top": 0}, "exporters::console")

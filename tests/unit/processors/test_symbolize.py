from __future__ import annotations

import json
import logging
from pathlib import Path

import jsonschema
import pytest

from telegen import registry
from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import CPU, Frame, FrameKind, Line, Mapping, Profile, Profiles, make_labels
from telegen.processors.symbolize.config import SymbolizeConfig
from telegen.processors.symbolize.symbolize import SymbolizeProcessor
from telegen.telemetry import Registry
from telegen.testing.sink import Sink

SCHEMA = Path(__file__).resolve().parents[3] / "telegen" / "schema" / "processors" / \
    "symbolize.json"


def _processor(tmp_path: Path, **cfg: object) -> tuple[SymbolizeProcessor, Sink, Registry]:
    reg = Registry()
    sink = Sink()
    settings = CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                              reg.for_component("processor", "symbolize"), logging.getLogger("t"))
    cfg.setdefault("debuginfod_urls", [])
    cfg.setdefault("debuginfod_cache_dir", str(tmp_path / "cache"))
    return SymbolizeProcessor(settings, SymbolizeConfig(**cfg), sink), sink, reg


def test_factory_is_registered() -> None:
    f = registry.get(Kind.PROCESSOR, "symbolize")
    assert f is not None and f.config_type is SymbolizeConfig


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUGINFOD_URLS", "http://127.0.0.1:8002 https://example.invalid/")
    cfg = SymbolizeConfig()
    assert cfg.debuginfod_urls == ["http://127.0.0.1:8002", "https://example.invalid/"]
    assert (cfg.demangle_cpp, cfg.demangle_rust, cfg.include_kernel) == (True, True, False)
    assert cfg.debug_dirs == ["/usr/lib/debug"] and cfg.debuginfod_timeout == 5.0
    cfg.validate()
    monkeypatch.delenv("DEBUGINFOD_URLS")
    assert SymbolizeConfig().debuginfod_urls == []


def test_schema_accepts_the_keys_and_rejects_unknown_ones() -> None:
    schema = json.loads(SCHEMA.read_text())
    good = {"demangle_cpp": False, "demangle_rust": True, "include_kernel": True,
            "debuginfod_urls": ["http://127.0.0.1:1"], "debuginfod_cache_dir": "/tmp/x",
            "debuginfod_timeout": "2s", "debuginfod_deadline": "30s",
            "debuginfod_max_bytes": 1 << 20, "debuginfod_allow_insecure": False,
            "debug_dirs": ["/usr/lib/debug"], "cache_size": 10}
    jsonschema.validate(good, schema)
    assert set(good) == set(SymbolizeConfig.__dataclass_fields__)
    for bad in ({"demangle": True}, {"cache_size": 0}, {"debuginfod_urls": ["ftp://x"]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize("bad, message", [
    ({"debuginfod_timeout": 0.0}, "debuginfod_timeout must be > 0"),
    ({"cache_size": 0}, "cache_size must be >= 1"),
    ({"debuginfod_urls": ["127.0.0.1:8002"]}, "not an http(s) URL"),
    ({"debuginfod_urls": ["file:///etc/shadow"]}, "not an http(s) URL"),
    ({"debuginfod_urls": ["http://debuginfod.example.org"]},
     "plain http to a non-loopback host"),
    ({"debuginfod_deadline": 0.0}, "debuginfod_deadline must be > 0"),
    ({"debuginfod_max_bytes": 10}, "debuginfod_max_bytes must be >= 4096"),
    ({"debug_dirs": [""]}, "debug_dirs: empty path"),
])
def test_validate_names_the_problem(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SymbolizeConfig(**bad).validate()   # type: ignore[arg-type]


def test_frames_never_lost(tmp_path: Path) -> None:
    proc, sink, reg = _processor(tmp_path)
    done = Frame(FrameKind.NATIVE, 0x10, Mapping(file="/x"), (Line("already"),))
    py = Frame(FrameKind.PYTHON, 0, None, (Line("handler", "app.py", 3),))
    no_mapping = Frame(FrameKind.NATIVE, 0x4242, None)
    gone = Frame(FrameKind.NATIVE, 0x401000, Mapping(0x400000, 0x500000, 0x1000,
                                                      str(tmp_path / "deleted-binary")))
    kernel = Frame(FrameKind.KERNEL, 0xFFFFFFFF81000010, Mapping(file="[kernel.kallsyms]"))
    profile = Profile(name="cpu", sample_types=CPU)
    profile.add((kernel, done, py, no_mapping, gone), [1, 10],
                make_labels(**{"process.pid": 999999}))
    proc.consume(Profiles([profile]))
    (sample,) = sink.profiles()[0].samples
    assert sample.stack == (done, py, no_mapping, gone)     # kernel removed: include_kernel off
    assert gone.name == "deleted-binary+0x2000"
    snap = reg.snapshot()
    assert snap['symbolize_frames{component="symbolize",kind="processor",source="unknown"}'] == 2
    assert snap['symbolize_unknown_frames{component="symbolize",kind="processor"}'] == 2


def test_insecure_http_allowed_when_the_config_says_so() -> None:
    SymbolizeConfig(debuginfod_urls=["http://debuginfod.example.org"],
                    debuginfod_allow_insecure=True).validate()
    SymbolizeConfig(debuginfod_urls=["http://localhost:8002", "http://[::1]:1",
                                     "http://127.0.0.2/"]).validate()


def test_rejected_objects_and_refusals_reach_the_processors_metrics(tmp_path: Path) -> None:
    """The symbolizers the processor builds (observed and pushed) count
    rejected objects as symbolize_rejected_objects{reason} and refusals as
    refused_inputs in the processor's telemetry."""
    proc, _sink, reg = _processor(tmp_path)
    for sym in (proc.symbolizer, proc._pushed_symbolizer()):
        assert sym.refusals is proc.refusals
        assert sym._rejected_counter is not None
        sym._rejected_counter("cpu_time").add()
        sym.refusals.note("build_id", "bad_build_id")
    snap = reg.snapshot()
    assert snap['symbolize_rejected_objects{component="symbolize",kind="processor",'
                'reason="cpu_time"}'] == 2
    assert snap['refused_inputs{component="symbolize",kind="processor",'
                'reason="bad_build_id",source="build_id"}'] == 2

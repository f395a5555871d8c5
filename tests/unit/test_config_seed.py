"""Translation of the seed document's ``agent.profiling`` block (telegen.config.seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, Kind
from telegen.config import Config, load_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "config"))
import builds  # noqa: E402

SEED = Path(__file__).resolve().parents[2] / "config-examples" / "seed"
R, P, E = Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER


def cid(text: str) -> ComponentID:
    return ComponentID.parse(text)


def load(text: str) -> Config:
    return load_text(text, "test.yaml", env={})


def test_enabled_true_is_host_wide_cpu_and_off_cpu() -> None:
    c = load("agent: {profiling: {enabled: true}}")
    p = c.pipelines["profiles/agent"]
    assert p.receivers == [cid("ebpf/agent")]
    assert [str(x) for x in p.processors] == [t + "/agent" for t in ("symbolize", "batch")
                                              if registry.get(P, t)]
    assert p.exporters == [cid("pprof_file/agent"), cid("console/agent")]
    ebpf = c.components[R][cid("ebpf/agent")]
    assert (ebpf.cpu, ebpf.off_cpu) == (True, True)
    assert c.components[E][cid("pprof_file/agent")].directory == "./profiles"
    assert not [w for w in c.warnings if "not used" in w]


def test_enabled_false_makes_no_pipeline() -> None:
    with pytest.raises(ConfigError, match="^service::pipelines: no pipeline to run"):
        load("agent: {profiling: {enabled: false}}")
    c = load("receivers: {pprof: {paths: [a]}}\nexporters: {console: {}}\n"
             "service: {pipelines: {profiles: {receivers: [pprof], exporters: [console]}}}\n"
             "agent: {profiling: {enabled: false}}")
    assert list(c.pipelines) == ["profiles"] and c.warnings == []


def test_full_configuration() -> None:
    c = load_text((SEED / "full.yaml").read_text(), "full.yaml", env={})
    p = c.pipelines["profiles/agent"]
    ebpf = c.components[R][cid("ebpf/agent")]
    assert (ebpf.sample_rate, ebpf.duration, ebpf.cpu, ebpf.off_cpu) == (99, 10.0, True, True)
    assert ebpf.include_kernel is False
    f = c.components[P][cid("filter/agent")]
    assert (f.min_samples, f.exclude_patterns) == (1, ["runtime.*", "java.lang.*"])
    assert cid("filter/agent") in p.processors
    if registry.get(P, "batch"):
        assert c.components[P][cid("batch/agent")].timeout == 60.0
    if registry.get(P, "symbolize"):
        s = c.components[P][cid("symbolize/agent")]
        assert (s.demangle_rust, s.demangle_cpp, s.include_kernel) == (True, True, False)
        assert p.processors.index(cid("symbolize/agent")) < p.processors.index(cid("filter/agent"))
    if registry.get(R, "go") is None:
        for key in ("goroutine", "block"):
            assert (f'agent::profiling::{key}: needs receiver "go", which this build does not '
                    f"include yet; ignored") in c.warnings
        assert ('agent::profiling::mutex: needs receiver "go", which this build does not '
                "include yet; ignored for Go programs") in c.warnings


def test_missing_component_types_are_warnings_not_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    builds.only(monkeypatch, (R, "ebpf"), (E, "console"))
    c = load("agent:\n  profiling:\n    upload_interval: 30s\n    symbols: {demangle_cpp: true}\n"
             "    filters: {min_samples: 2}\n    java: {jfr_enabled: true, gc: true}\n"
             "    python: {enabled: true, asyncio: true}\n")
    assert c.pipelines["profiles/agent"].processors == []
    assert c.pipelines["profiles/agent"].exporters == [cid("console/agent")]
    expected = [
        'agent::profiling::java: needs receiver "jfr", which this build does not include yet; '
        "ignored",
        'agent::profiling::python: needs receiver "python", which this build does not include '
        "yet; ignored",
        'agent::profiling::symbols: needs processor "symbolize"',
        'agent::profiling::filters: needs processor "filter"',
        'agent::profiling::upload_interval: needs processor "batch"',
        'agent::profiling: needs exporter "pprof_file"',
    ]
    for text in expected:
        assert any(w.startswith(text) for w in c.warnings), (text, c.warnings)


def test_false_switch_for_missing_receiver_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    builds.only(monkeypatch, (R, "ebpf"), (E, "console"))
    c = load((SEED / "reducing-overhead.yaml").read_text())
    assert not any("goroutine" in w or "block" in w for w in c.warnings)
    assert c.components[R][cid("ebpf/agent")].sample_rate == 49


def test_no_receiver_available_is_an_error_naming_why(monkeypatch: pytest.MonkeyPatch) -> None:
    builds.only(monkeypatch, (E, "console"))
    with pytest.raises(ConfigError) as info:
        load("agent: {profiling: {enabled: true}}")
    assert str(info.value) == ('agent::profiling: no receiver in this build can collect the '
                               'requested profiles (receiver "ebpf" not included yet), so there '
                               'is nothing to run')


def test_memory_mode_without_memory_warns() -> None:
    c = load("agent: {profiling: {memory_mode: inuse}}")
    assert "agent::profiling::memory_mode: has no effect unless memory: true; ignored" in c.warnings


def test_exporters_follow_user_pipelines() -> None:
    c = load("receivers: {pprof: {paths: [a]}}\n"
             "exporters: {console: {}, pprof_file/archive: {directory: /tmp/x}, "
             "pprof_file/unused: {}}\n"
             "service: {pipelines: {profiles: {receivers: [pprof], "
             "exporters: [pprof_file/archive, console]}}}\n"
             "agent: {profiling: {enabled: true}}")
    assert c.pipelines["profiles/agent"].exporters == [cid("pprof_file/archive"), cid("console")]
    assert cid("pprof_file/agent") not in c.components[E]
    assert c.warnings == [
        "exporters::pprof_file/unused: configured but not used in any pipeline; it will not run"]


def test_exporters_without_pipelines_means_all_configured() -> None:
    c = load("exporters: {console: {}, pprof_file/archive: {directory: /tmp/x}}\n"
             "agent: {profiling: {enabled: true}}")
    assert c.pipelines["profiles/agent"].exporters == [cid("console"), cid("pprof_file/archive")]
    assert list(c.pipelines) == ["profiles/agent"]


def test_errors_in_translated_components_point_at_the_seed() -> None:
    with pytest.raises(ConfigError, match=r"^agent::profiling::filters: exclude_patterns: empty"):
        load("agent: {profiling: {filters: {exclude_patterns: ['']}}}")
    if registry.get(P, "batch"):
        with pytest.raises(ConfigError, match=r"^agent::profiling::upload_interval: timeout"):
            load("agent: {profiling: {upload_interval: 0s}}")


def test_translated_ids_must_not_clash() -> None:
    with pytest.raises(ConfigError, match=r"^receivers::ebpf/agent: this id is reserved"):
        load("receivers: {ebpf/agent: {}}\nagent: {profiling: {enabled: true}}")


def test_everything_off_next_to_user_pipeline_is_a_warning() -> None:
    c = load("receivers: {pprof: {paths: [a]}}\nexporters: {console: {}}\n"
             "service: {pipelines: {profiles: {receivers: [pprof], exporters: [console]}}}\n"
             "agent: {profiling: {cpu: false, off_cpu: false}}")
    assert list(c.pipelines) == ["profiles"]
    assert c.warnings == [
        "agent::profiling: every profile type is off; no agent pipeline is created"]


def test_seed_env_expansion() -> None:
    c = load_text("agent: {profiling: {sample_rate: '${env:RATE:-19}'}}", "x", env={})
    assert c.components[R][cid("ebpf/agent")].sample_rate == 19

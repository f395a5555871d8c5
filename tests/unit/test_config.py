"""Document-level semantics: sections, ids, pipelines, service, warnings
(telegen.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, Kind
from telegen.config import Config, PipelineConfig, TelemetryConfig, load_file, load_text
from telegen.processors.filter.config import FilterConfig

BASE = """
receivers:
  pprof: {paths: ["/in/*.pb.gz"]}
  pprof/other: {paths: ["/other/*.pb.gz"]}
processors:
  filter: {exclude_patterns: ["runtime.*"]}
  filter/strict: {min_samples: 5}
exporters:
  pprof_file: {directory: /out}
  console:
service:
  pipelines:
    profiles:
      receivers: [pprof, pprof/other]
      processors: [filter/strict, filter]
      exporters: [pprof_file, console]
"""


def cid(text: str) -> ComponentID:
    return ComponentID.parse(text)


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return load_text(text, "test.yaml", env=env or {})


def test_builds_components_and_pipeline_in_order() -> None:
    c = load(BASE)
    assert c.source == "test.yaml" and c.warnings == [] and c.extensions == []
    assert c.pipelines == {"profiles": PipelineConfig(
        id="profiles", receivers=[cid("pprof"), cid("pprof/other")],
        processors=[cid("filter/strict"), cid("filter")],
        exporters=[cid("pprof_file"), cid("console")])}
    assert c.components[Kind.PROCESSOR][cid("filter")] == FilterConfig(["runtime.*"], 1)
    assert c.components[Kind.PROCESSOR][cid("filter/strict")].min_samples == 5
    assert set(c.components) == set(Kind)
    assert c.components[Kind.EXTENSION] == {}
    assert c.telemetry == TelemetryConfig()


def test_named_pipelines_share_components() -> None:
    c = load(BASE + "    profiles/second:\n      receivers: [pprof]\n"
                    "      exporters: [console]\n")
    assert list(c.pipelines) == ["profiles", "profiles/second"]
    assert c.pipelines["profiles/second"].processors == []


def test_unused_components_are_warnings() -> None:
    c = load(BASE.replace("processors: [filter/strict, filter]", "processors: [filter]"))
    assert c.warnings == [
        "processors::filter/strict: configured but not used in any pipeline; it will not run"]


def test_reference_errors_use_collector_wording() -> None:
    with pytest.raises(ConfigError) as info:
        load(BASE.replace("[filter/strict, filter]", "[x]"))
    assert str(info.value).startswith(
        'service::pipelines::profiles: references processor "x" which is not configured')


def test_unknown_type_lists_available_types() -> None:
    with pytest.raises(ConfigError) as info:
        load(BASE.replace("  filter/strict:", "  fliter/strict:"))
    msg = str(info.value)
    assert msg.startswith('processors::fliter/strict: unknown processor type "fliter" '
                          '(did you mean "filter"?); available processor types: ')
    assert "filter" in msg.split("available processor types: ")[1]


def test_empty_component_body_means_defaults() -> None:
    factory = registry.get(Kind.EXPORTER, "console")
    assert factory is not None
    assert load(BASE).components[Kind.EXPORTER][cid("console")] == factory.config_type()


def test_telemetry() -> None:
    c = load(BASE + "  telemetry:\n    metrics: {level: detailed, address: '[::1]:9999'}\n"
                    "    logs: {level: warn}\n")
    assert c.telemetry == TelemetryConfig(True, "[::1]:9999", "warn")
    c = load(BASE + "  telemetry:\n    metrics: {level: none}\n")
    assert c.telemetry.metrics_enabled is False


def test_env_values_are_expanded_before_validation() -> None:
    text = BASE.replace("{min_samples: 5}", "{min_samples: '${env:MIN}'}")
    strict = load(text, {"MIN": "7"}).components[Kind.PROCESSOR][cid("filter/strict")]
    assert strict.min_samples == 7
    with pytest.raises(ConfigError, match=r"^processors::filter/strict::min_samples: environment "
                                          r"variable MIN is not set"):
        load(text)


def test_service_extensions_must_be_configured() -> None:
    with pytest.raises(ConfigError, match=r'^service::extensions: references extension "zpages"'):
        load(BASE + "  extensions: [zpages]\n")


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_file(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_file(str(bad))
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert load_file(str(good), env={}).source == str(good)


def test_uses_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGEN_TEST_DIR", "/from/env")
    c = load_text(BASE.replace("{directory: /out}", "{directory: '${env:TELEGEN_TEST_DIR}'}"),
                  "x")
    assert c.components[Kind.EXPORTER][cid("pprof_file")].directory == "/from/env"

"""Schema validation, error translation and component config building
(telegen.config.schema)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from telegen import registry
from telegen.component import ConfigError, Factory, Kind
from telegen.config import build_component_config
from telegen.config.schema import did_you_mean, expected, validate
from telegen.processors.filter.config import FilterConfig


@dataclass
class Retry:
    enabled: bool = True
    max_elapsed: float = field(default=300.0, metadata={"duration": True})


@dataclass
class DemoConfig:
    interval: float = field(default=10.0, metadata={"duration": True})
    names: list[str] = field(default_factory=list)
    level: str = "low"
    count: int = 1
    retry: Retry = field(default_factory=Retry)

    def validate(self) -> None:
        if self.count == 13:
            raise ValueError("count must not be 13\n(unlucky)")


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "interval": {"type": ["string", "number"], "format": "duration"},
        "names": {"type": "array", "items": {"type": "string"}},
        "level": {"enum": ["low", "high"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 100},
        "retry": {"type": "object", "additionalProperties": False, "properties": {
            "enabled": {"type": "boolean"},
            "max_elapsed": {"type": ["string", "number"], "format": "duration"}}},
    },
}


@pytest.fixture
def demo(tmp_path: Path) -> Factory:
    schema = tmp_path / "demo.json"
    schema.write_text(json.dumps(SCHEMA))
    return Factory("demo", Kind.RECEIVER, DemoConfig, lambda *a: None, str(schema))


def _error(factory: Factory, raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_component_config(factory, raw, "receivers::demo")
    assert "\n" not in str(info.value)
    return info.value


def test_defaults_when_empty(demo: Factory) -> None:
    assert build_component_config(demo, None, "receivers::demo") == DemoConfig()
    assert build_component_config(demo, {}, "receivers::demo") == DemoConfig()


def test_overlay_converts_durations_and_nested_dataclasses(demo: Factory) -> None:
    cfg = build_component_config(demo, {"interval": "1m30s", "names": ["a"],
                                        "retry": {"max_elapsed": "2m"}}, "receivers::demo")
    assert cfg.interval == 90.0 and cfg.names == ["a"]
    assert cfg.retry == Retry(enabled=True, max_elapsed=120.0)
    assert build_component_config(demo, {"interval": 3}, "p").interval == 3.0


def test_each_build_gets_fresh_defaults(demo: Factory) -> None:
    a = build_component_config(demo, {}, "p")
    a.names.append("x")
    assert build_component_config(demo, {}, "p").names == []


def test_unknown_key_with_suggestion(demo: Factory) -> None:
    err = _error(demo, {"intreval": "1s"})
    assert str(err) == 'receivers::demo: unknown key "intreval" (did you mean "interval"?)'
    err = _error(demo, {"zzz": 1})
    assert str(err) == ('receivers::demo: unknown key "zzz"; valid keys: interval, names, '
                        'level, count, retry')
    err = _error(demo, {"retry": {"enable": False}})
    assert str(err) == 'receivers::demo::retry: unknown key "enable" (did you mean "enabled"?)'


def test_type_errors_name_the_path(demo: Factory) -> None:
    assert str(_error(demo, {"names": 5})) == (
        "receivers::demo::names: expected a list of strings (got 5)")
    assert str(_error(demo, {"names": ["a", 7]})) == (
        "receivers::demo::names[1]: expected a string (got 7)")
    assert str(_error(demo, {"count": "3"})) == (
        'receivers::demo::count: expected an integer (got "3")')


def test_range_enum_and_duration_messages(demo: Factory) -> None:
    assert str(_error(demo, {"count": 0})) == (
        "receivers::demo::count: must be between 1 and 100 (got 0)")
    assert str(_error(demo, {"level": "hihg"})) == (
        'receivers::demo::level: must be one of "low", "high" (got "hihg") (did you mean "high"?)')
    assert "invalid duration \"5\"" in str(_error(demo, {"interval": "5"}))
    assert "must not be negative" in str(_error(demo, {"interval": -2}))
    assert str(_error(demo, {"retry": {"max_elapsed": "1x"}})).startswith(
        "receivers::demo::retry::max_elapsed: invalid duration")


def test_validate_value_error_becomes_one_line_config_error(demo: Factory) -> None:
    err = _error(demo, {"count": 13})
    assert err.path == "receivers::demo"
    assert err.message == "count must not be 13 (unlucky)"


def test_settings_must_be_a_mapping(demo: Factory) -> None:
    assert "expected a mapping of settings" in str(_error(demo, ["a"]))  # type: ignore[arg-type]


def test_real_filter_processor() -> None:
    factory = registry.get(Kind.PROCESSOR, "filter")
    assert factory is not None
    cfg = build_component_config(factory, {"exclude_patterns": ["runtime.*"]}, "processors::filter")
    assert cfg == FilterConfig(exclude_patterns=["runtime.*"], min_samples=1)
    message = r"^processors::filter::min_samples: must be >= 0 \(got -1\)$"
    with pytest.raises(ConfigError, match=message):
        build_component_config(factory, {"min_samples": -1}, "processors::filter")


def test_missing_schema_is_a_config_error() -> None:
    factory = Factory("ghost", Kind.RECEIVER, DemoConfig, lambda *a: None, "receivers/ghost.json")
    with pytest.raises(ConfigError, match="internal error: schema receivers/ghost.json"):
        build_component_config(factory, {}, "receivers::ghost")


def test_did_you_mean() -> None:
    assert did_you_mean("sampel_rate", ["sample_rate", "duration"]) == (
        ' (did you mean "sample_rate"?)')
    assert did_you_mean("xyz", ["sample_rate"]) == ""


def test_expected_phrases() -> None:
    assert expected({"type": "boolean"}) == "true or false"
    assert expected({"type": ["string", "number"], "format": "duration"}).startswith("a duration")
    assert expected({"type": "array", "items": {"type": "integer"}}) == "a list of integers"
    assert expected({"type": "array", "x-expected": "a list of globs"}) == "a list of globs"


def test_document_schema_rejects_unknown_sections() -> None:
    with pytest.raises(ConfigError, match=r'^unknown key "connectors"'):
        validate({"connectors": {}}, "config.json")
    validate({"receivers": None, "service": {"pipelines": {"profiles": None}}}, "config.json")

from __future__ import annotations

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, Kind
from telegen.config import load_text
from telegen.config.schema import build_component_config
from telegen.receivers.go.config import GoReceiverConfig, GoTarget, normalize_endpoint

PATH = "receivers::go"


def build(raw: dict[str, object]) -> GoReceiverConfig:
    factory = registry.get(Kind.RECEIVER, "go")
    assert factory is not None
    cfg = build_component_config(factory, raw, PATH)
    assert isinstance(cfg, GoReceiverConfig)
    return cfg


def error(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        build(raw)
    return str(info.value)


def test_defaults_follow_the_seed_cpu_on_the_rest_off() -> None:
    cfg = GoReceiverConfig()
    assert (cfg.cpu, cfg.memory, cfg.goroutine, cfg.mutex, cfg.block) == (
        True, False, False, False, False)
    assert (cfg.interval, cfg.cpu_seconds, cfg.timeout) == (10.0, 0.0, 5.0)
    assert (cfg.discovery, cfg.max_concurrency, cfg.max_body_bytes) == (False, 8, 64 << 20)


def test_yaml_targets_and_durations() -> None:
    cfg = build({"targets": [{"endpoint": "127.0.0.1:6060", "labels": {"service.name": "api"}},
                             {"endpoint": "http://10.0.0.2:8080/custom/pprof/"}],
                 "interval": "15s", "cpu_seconds": "5s", "timeout": "500ms", "mutex": True})
    assert cfg.targets == [GoTarget("127.0.0.1:6060", {"service.name": "api"}),
                           GoTarget("http://10.0.0.2:8080/custom/pprof/", {})]
    assert [t.base_url for t in cfg.targets] == ["http://127.0.0.1:6060/debug/pprof",
                                                 "http://10.0.0.2:8080/custom/pprof"]
    assert (cfg.interval, cfg.cpu_seconds, cfg.timeout, cfg.mutex) == (15.0, 5.0, 0.5, True)
    assert cfg.cpu_window_seconds() == 5


@pytest.mark.parametrize(("interval", "cpu_seconds", "window"), [
    (10.0, 0.0, 9), (2.0, 0.0, 1), (60.0, 0.0, 59), (10.0, 4.0, 4), (10.0, 10.0, 9),
    (3.5, 0.0, 3),
])
def test_cpu_window_is_whole_seconds_within_the_interval(interval: float, cpu_seconds: float,
                                                         window: int) -> None:
    cfg = GoReceiverConfig(targets=[GoTarget("a:1")], interval=interval, cpu_seconds=cpu_seconds)
    cfg.validate()
    assert cfg.cpu_window_seconds() == window


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "nothing to scrape: list targets"),
    ({"discovery": True, "cpu": False}, "nothing to collect: enable at least one of cpu, "
                                        "memory, goroutine, mutex, block"),
    ({"discovery": True, "interval": "500ms", "cpu": False, "mutex": True},
     "interval must be at least 1s (got 0.5s)"),
    ({"discovery": True, "interval": "1s"}, "interval must be at least 2s when cpu is on"),
    ({"discovery": True, "interval": "10s", "cpu_seconds": "20s"},
     "cpu_seconds (20.0s) must not exceed interval (10.0s)"),
    ({"targets": [{"endpoint": "a:1"}, {"endpoint": "http://a:1/debug/pprof/"}]},
     "targets[1]: endpoint 'http://a:1/debug/pprof/' is listed twice"),
    ({"targets": [{"endpoint": "ftp://a:1"}]}, "targets[0]: endpoint 'ftp://a:1': scheme must"),
    ({"targets": [{"endpoint": "a:port"}]}, "targets[0]: endpoint 'a:port': invalid port"),
    ({"discovery": True, "timeout": 0}, "timeout must be > 0"),
])
def test_validation_names_the_problem(raw: dict[str, object], message: str) -> None:
    text = error(raw)
    assert text.startswith(PATH + ": ") and message in text, text


def test_schema_errors_name_the_key() -> None:
    assert error({"discovery": True, "intervall": "1s"}) == (
        f'{PATH}: unknown key "intervall" (did you mean "interval"?)')
    assert 'unknown key "port"' in error({"targets": [{"endpoint": "a:1", "port": 2}]})
    assert "missing required key \"endpoint\"" in error({"targets": [{"labels": {}}]})
    assert "max_concurrency: must be between 1 and 256" in error(
        {"discovery": True, "max_concurrency": 0})
    assert "interval: invalid duration" in error({"discovery": True, "interval": "soon"})


def test_normalize_endpoint() -> None:
    assert normalize_endpoint("localhost:6060") == "http://localhost:6060/debug/pprof"
    assert normalize_endpoint("https://h:443/x/") == "https://h:443/x"
    with pytest.raises(ValueError, match="no query"):
        normalize_endpoint("h:1/debug/pprof?x=1")


def test_seed_go_switches_make_a_discovering_go_receiver_without_cpu() -> None:
    c = load_text("agent:\n  profiling:\n    goroutine: true\n    mutex: true\n"
                  "    block: false\n", "seed.yaml", env={})
    go = c.components[Kind.RECEIVER][ComponentID("go", "agent")]
    assert isinstance(go, GoReceiverConfig)
    assert (go.discovery, go.cpu, go.memory, go.goroutine, go.mutex, go.block) == (
        True, False, False, True, True, False)
    assert ComponentID("go", "agent") in c.pipelines["profiles/agent"].receivers
    assert not any("go" in w for w in c.warnings), c.warnings


def test_seed_without_go_switches_makes_no_go_receiver() -> None:
    c = load_text("agent:\n  profiling:\n    goroutine: false\n    mutex: false\n",
                  "seed.yaml", env={})
    assert ComponentID("go", "agent") not in c.components.get(Kind.RECEIVER, {})

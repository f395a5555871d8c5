from __future__ import annotations

import pytest

from telegen import registry
from telegen.component import ComponentID, ConfigError, Kind
from telegen.config import load_text
from telegen.config.schema import build_component_config
from telegen.receivers.python.config import PythonReceiverConfig

PATH = "receivers::python"


def build(raw: dict[str, object]) -> PythonReceiverConfig:
    factory = registry.get(Kind.RECEIVER, "python")
    assert factory is not None
    cfg = build_component_config(factory, raw, PATH)
    assert isinstance(cfg, PythonReceiverConfig)
    return cfg


def test_defaults() -> None:
    cfg = PythonReceiverConfig()
    cfg.validate()
    assert (cfg.discovery, cfg.sample_rate, cfg.duration, cfg.include_idle, cfg.gil_only,
            cfg.native, cfg.nonblocking, cfg.engine) == (True, 100, 10.0, False, False, False,
                                                         True, "py-spy")


def test_yaml_durations_and_switches() -> None:
    cfg = build({"process_names": ["app.py"], "duration": "2500ms", "scan_interval": "1s",
                 "gil_only": True, "native": True, "include_idle": True, "sample_rate": 49})
    assert (cfg.duration, cfg.scan_interval, cfg.window_seconds) == (2.5, 1.0, 3)
    assert (cfg.gil_only, cfg.native, cfg.include_idle, cfg.sample_rate) == (True, True, True, 49)


@pytest.mark.parametrize(("raw", "message"), [
    ({"sample_rate": 0}, "sample_rate must be between 1 and 1000 Hz (got 0)"),
    ({"duration": "500ms"}, "duration must be >= 1s"),
    ({"discovery": False}, "nothing to sample: set pids, process_names or discovery: true"),
    ({"pids": [0]}, "pids"),
    ({"idle": True}, "idle"),
    ({"engine": "austin"}, "engine"),
])
def test_errors_name_the_path(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(raw)
    assert str(info.value).startswith(PATH)
    assert message in str(info.value)


def test_seed_python_block_becomes_the_python_receiver() -> None:
    c = load_text("agent:\n  profiling:\n    python:\n      enabled: true\n      asyncio: true\n",
                  "seed.yaml", env={})
    cfg = c.components[Kind.RECEIVER][ComponentID("python", "agent")]
    assert isinstance(cfg, PythonReceiverConfig)
    assert cfg.asyncio is True and cfg.discovery is True
    assert ComponentID("python", "agent") in c.pipelines["profiles/agent"].receivers
    off = load_text("agent:\n  profiling:\n    python: {enabled: false}\n", "s.yaml", env={})
    assert ComponentID("python", "agent") not in off.components[Kind.RECEIVER]

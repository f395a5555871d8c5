"""Every file under config-examples/ (including the seed document's examples in
config-examples/seed/) must load without error."""

from __future__ import annotations

from pathlib import Path

import pytest

from telegen.component import Kind
from telegen.config import load_default, load_file

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "config-examples").rglob("*.yaml"))
IDS = [str(p.relative_to(p.parents[1] if p.parent.name == "seed" else p.parent)) for p in EXAMPLES]


def test_all_examples_are_present() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"dev.yaml", "staging.yaml", "production.yaml", "multi-backend.yaml"} <= names
    seed = {p.stem for p in EXAMPLES if p.parent.name == "seed"}
    assert seed == {"enable", "full", "memory", "go", "java", "python", "reducing-overhead",
                    "best-practice-cpu-offcpu"}


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_example_loads(path: Path) -> None:
    config = load_file(str(path), env={})
    assert config.pipelines
    assert not [w for w in config.warnings if "not used" in w]


def test_production_reads_the_environment() -> None:
    path = next(p for p in EXAMPLES if p.name == "production.yaml")
    config = load_file(str(path), env={"TELEGEN_SAMPLE_RATE": "7", "TELEGEN_LOG_LEVEL": "error"})
    ebpf = next(iter(config.components[Kind.RECEIVER].values()))
    assert ebpf.sample_rate == 7
    assert config.telemetry.log_level == "error"
    assert load_file(str(path), env={}).telemetry.metrics_address == "127.0.0.1:8888"


def test_embedded_default() -> None:
    config = load_default()
    assert config.source == "<embedded default>"
    assert list(config.pipelines) == ["profiles/agent"]
    pipeline = config.pipelines["profiles/agent"]
    assert [str(r) for r in pipeline.receivers] == ["ebpf/agent"]
    assert [str(e) for e in pipeline.exporters] == ["pprof_file/agent", "console/agent"]
    assert (config.telemetry.metrics_enabled, config.telemetry.log_level) == (False, "info")

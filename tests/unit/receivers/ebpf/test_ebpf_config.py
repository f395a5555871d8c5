from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest

from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.factory import FACTORY

SCHEMA = Path(__file__).resolve().parents[4] / "telegen" / "schema" / "receivers" / "ebpf.json"


def test_defaults_are_valid_and_documented_values() -> None:
    c = EbpfConfig()
    c.validate()
    assert (c.sample_rate, c.duration, c.cpu, c.off_cpu) == (99, 10.0, True, True)
    assert c.off_cpu_threshold == 0.001 and c.unwinding == "auto" and not c.self_profile
    assert not c.targeted


@pytest.mark.parametrize("change, message", [
    ({"sample_rate": 0}, "sample_rate must be between 1 and 10000 (got 0)"),
    ({"sample_rate": 10001}, "sample_rate must be between 1 and 10000"),
    ({"unwinding": "lbr"}, "unwinding must be one of auto, frame_pointer, dwarf"),
    ({"process_names": ["("]}, "invalid regular expression"),
    ({"pids": [0]}, "positive integers"),
    ({"cpu": False, "off_cpu": False}, "nothing to collect"),
    ({"max_stacks": 10}, "max_stacks"),
    ({"memory_mode": "peak"}, "memory_mode"),
])
def test_validate_names_the_problem(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(EbpfConfig(), **change).validate()


def test_schema_matches_config_fields() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(EbpfConfig)}
    duration_fields = {f.name for f in dataclasses.fields(EbpfConfig)
                       if f.metadata.get("duration")}
    assert duration_fields == {"duration", "off_cpu_threshold", "mutex_threshold"}
    for name in duration_fields:
        assert schema["properties"][name]["format"] == "duration"
    jsonschema.validate({"sample_rate": 49, "duration": "10s", "pids": [1],
                         "memory": True, "memory_mode": "inuse", "mutex": False}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sample_rte": 49}, schema)


def test_factory() -> None:
    assert FACTORY.type == "ebpf" and FACTORY.config_type is EbpfConfig
    assert FACTORY.schema == "receivers/ebpf.json"


def test_name_pattern_searches_comm_or_exe() -> None:
    p = EbpfConfig(process_names=["^nginx", "postgres"]).name_pattern()
    assert p is not None
    assert p.search("nginx: worker") and p.search("/usr/lib/postgresql/bin/postgres")
    assert not p.search("python")

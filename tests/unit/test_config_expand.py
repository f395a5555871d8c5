"""``${env:...}`` expansion, YAML loading and durations (telegen.config.expand)."""

from __future__ import annotations

import pytest

from telegen.component import ConfigError
from telegen.config.expand import expand, is_duration, load_yaml, parse_duration


def _x(value: object, env: dict[str, str] | None = None) -> object:
    return expand({"k": value}, env or {})["k"]


def test_whole_reference_is_parsed_as_yaml() -> None:
    env = {"PID": "123", "RATE": "49.5", "ON": "true", "LIST": "[1, 2]"}
    tree = load_yaml("pids: [${env:PID}]\nrate: ${RATE}\nflag: ${env:ON}\nl: ${env:LIST}\n")
    assert expand(tree, env) == {"pids": [123], "rate": 49.5, "flag": True, "l": [1, 2]}


def test_references_survive_yaml_flow_collections() -> None:
    tree = load_yaml('a: {dir: ${env:D}, n: [${env:N}, "${env:N}"]}\nb: "$${env:KEEP}"\n')
    assert expand(tree, {"D": "/tmp", "N": "7"}) == {"a": {"dir": "/tmp", "n": [7, 7]},
                                                     "b": "${env:KEEP}"}


def test_reference_inside_text_is_spliced() -> None:
    assert _x("/data/${env:APP}/*.pb.gz", {"APP": "shop"}) == "/data/shop/*.pb.gz"
    assert _x("${env:A}:${env:B}", {"A": "host", "B": "8888"}) == "host:8888"


def test_dollar_dollar_is_a_literal_dollar() -> None:
    assert _x("cost$$5") == "cost$5"
    assert _x("$${env:NOT_EXPANDED}") == "${env:NOT_EXPANDED}"
    assert _x("$$") == "$"
    assert _x("a $ alone") == "a $ alone"


def test_defaults_apply_when_unset_or_empty() -> None:
    assert _x("${env:RATE:-19}") == 19
    assert _x("${RATE:-19}", {"RATE": ""}) == 19
    assert _x("${env:RATE:-19}", {"RATE": "99"}) == 99
    assert _x("${env:ADDR:-0.0.0.0:8888}") == "0.0.0.0:8888"
    assert _x("dir=${env:D:-}") == "dir="
    assert _x("${env:D:-}") == ""


def test_unset_variable_names_path_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        expand({"receivers": {"ebpf": {"pids": ["${env:TARGET_PID}"]}}}, {})
    assert info.value.path == "receivers::ebpf::pids[0]"
    assert "TARGET_PID" in info.value.message and "${env:TARGET_PID:-default}" in str(info.value)


def test_keys_and_non_strings_are_left_alone() -> None:
    tree = {"${env:X}": 5, "n": 1.5, "b": False, "none": None}
    assert expand(tree, {}) == tree


def test_unsupported_scheme_and_bad_name() -> None:
    with pytest.raises(ConfigError, match="only environment variables"):
        _x("${file:/etc/passwd}")
    with pytest.raises(ConfigError, match="invalid reference"):
        _x("${env:}")


def test_value_that_is_not_valid_yaml_stays_text() -> None:
    assert _x("${env:V}", {"V": "a: b: c"}) == "a: b: c"
    assert _x("${env:V}", {"V": "#notacomment"}) == "#notacomment"
    assert _x("${env:V}", {"V": "null"}) is None
    assert _x("${env:V}", {"V": "10s"}) == "10s"


def test_yaml_errors_are_one_line_with_position() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml("a:\n  b: [1,\n")
    assert "line 3" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match='duplicate key "a"'):
        load_yaml("a: 1\na: 2\n")


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("2m", 120.0), ("500ms", 0.5), ("1h30m", 5400.0), ("1.5s", 1.5),
    ("250us", 0.00025), ("100ns", 1e-7), ("0s", 0.0), (5, 5.0), (0.25, 0.25), ("1m30s", 90.0),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert is_duration(text)


@pytest.mark.parametrize("bad", ["10", "-5s", "5 s", "s", "1d", "ten", "", "1.2.3s", True, -1])
def test_parse_duration_rejects(bad: object) -> None:
    assert not is_duration(bad)
    with pytest.raises(ConfigError) as info:
        parse_duration(bad, "processors::batch::timeout")  # type: ignore[arg-type]
    assert info.value.path == "processors::batch::timeout"


def test_negative_duration_says_so() -> None:
    with pytest.raises(ConfigError, match="must not be negative"):
        parse_duration("-5s")
    with pytest.raises(ConfigError, match="must not be negative"):
        parse_duration(-0.5)

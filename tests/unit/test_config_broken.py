"""Every file in tests/config/broken/ must be rejected with a one-line ConfigError
containing the text after its first-line ``# expect:`` comment."""

from __future__ import annotations

from pathlib import Path

import pytest

from telegen.config import ConfigError, load_file

CONFIG_TESTS = Path(__file__).resolve().parents[1] / "config"

BROKEN = sorted((CONFIG_TESTS / "broken").glob("*.yaml"))


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_enough_broken_configs() -> None:
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_config_is_rejected(path: Path) -> None:
    expect = _expectation(path)
    with pytest.raises(ConfigError) as info:
        load_file(str(path), env={"HOME": "/root"})
    message = str(info.value)
    assert "\n" not in message
    assert expect in message
    if info.value.path:
        assert message.startswith(info.value.path + ": ")

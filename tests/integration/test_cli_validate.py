"""`telegen validate` as users run it: every shipped example passes, every
broken config exits 2 with one line naming the file and the config path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from telegen.testing.agent import ROOT, telegen

EXAMPLES = sorted((ROOT / "config-examples").rglob("*.yaml"))
BROKEN = sorted((ROOT / "tests" / "config" / "broken").glob("*.yaml"))
SEED_EXAMPLES = sorted((ROOT / "config-examples" / "seed").glob("*.yaml"))


def test_corpus_sizes() -> None:
    assert len(BROKEN) >= 25
    assert len(SEED_EXAMPLES) >= 8          # every YAML block of the seed document


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_validate(path: Path) -> None:
    proc = telegen("validate", "-c", str(path), env={"PID": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_config_exits_2_with_one_line(path: Path) -> None:
    expect = re.search(r"^# expect: (.+)$", path.read_text(), re.M)
    assert expect, f"{path} lacks an '# expect:' line"
    proc = telegen("validate", "-c", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith(f"telegen: invalid config {path}: ")
    assert expect.group(1).strip() in lines[0]

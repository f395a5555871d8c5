from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def go_profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of real Go CPU profiles (3 × 1 s) and a heap profile."""
    from telegen.testing.goprog import CPUHOG_SOURCE, build_go_program, run_go_program

    cache = tmp_path_factory.mktemp("gobuild")
    out = tmp_path_factory.mktemp("goprofiles")
    binary = build_go_program(CPUHOG_SOURCE, cache_dir=cache)
    run_go_program(binary, [str(out), "3", "1"])
    return out

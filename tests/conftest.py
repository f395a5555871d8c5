from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest


@functools.cache
def _bpf_problems() -> str:
    """The doctor's report when BPF profiling cannot run here, else ""."""
    from telegen import doctor

    checks = doctor.run_checks(("root", *doctor.EBPF_PROFILING))
    return "" if all(c.ok for c in checks) else doctor.report(checks)


@pytest.fixture(autouse=True)
def _bpf_prerequisites(request: pytest.FixtureRequest) -> None:
    """Tests marked ``bpf`` need root and a working BPF stack. CI runs as root,
    so they fail loudly when it is missing, unless TELEGEN_ALLOW_NO_BPF=1 (then
    they skip, saying so)."""
    if request.node.get_closest_marker("bpf") is None:
        return
    problems = _bpf_problems()
    if not problems:
        return
    if os.environ.get("TELEGEN_ALLOW_NO_BPF") == "1":
        pytest.skip(f"BPF UNAVAILABLE, test NOT RUN (TELEGEN_ALLOW_NO_BPF=1):\n{problems}")
    pytest.fail(f"BPF prerequisites missing; these tests must run as root on a BPF-capable "
                f"host (set TELEGEN_ALLOW_NO_BPF=1 to skip):\n{problems}", pytrace=False)


@pytest.fixture(scope="session")
def go_profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of real Go CPU profiles (3 × 1 s) and a heap profile."""
    from telegen.testing.goprog import CPUHOG_SOURCE, build_go_program, run_go_program

    cache = tmp_path_factory.mktemp("gobuild")
    out = tmp_path_factory.mktemp("goprofiles")
    binary = build_go_program(CPUHOG_SOURCE, cache_dir=cache)
    run_go_program(binary, [str(out), "3", "1"])
    return out

"""Discovery on the real /proc with real interpreters."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from telegen.receivers.python.discovery import find_pythons, is_cpython, name_tokens, read_python
from telegen.testing import require

PY312 = sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12"))


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.fixture
def sleeper(tmp_path: os.PathLike[str]) -> Iterator[subprocess.Popen[bytes]]:
    require.prerequisite(bool(PY312), "pyenv's CPython 3.12")
    script = os.path.join(str(tmp_path), "idle_service.py")
    with open(script, "w") as f:
        f.write("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([PY312[0], "-X", "dev", script])
    # Popen returns after fork; wait for the exec so /proc shows the interpreter
    deadline = time.monotonic() + 10
    while script.encode() not in _cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_found_by_discovery_and_by_name_never_the_agent(
        sleeper: subprocess.Popen[bytes]) -> None:
    p = read_python(sleeper.pid)
    assert p is not None and p.version == (3, 12) and is_cpython(p)
    assert {"idle_service.py", "idle_service", "python3.12"} <= name_tokens(p)
    assert sleeper.pid in [x.pid for x in find_pythons(pids=[], names=[], discovery=True)]
    assert [x.pid for x in find_pythons(pids=[], names=["idle_service"], discovery=False)] == \
        [sleeper.pid]
    assert os.getpid() not in [x.pid for x in find_pythons(pids=[], names=[], discovery=True)]
    assert find_pythons(pids=[], names=["no_such_program"], discovery=True) == []


def test_non_python_processes_are_not_discovered() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        p = read_python(proc.pid)
        assert p is not None and not is_cpython(p)
        assert proc.pid not in [x.pid for x in find_pythons(pids=[], names=[], discovery=True)]
        # listed pids are taken as they are: the engine tells when one is not Python
        assert [x.pid for x in find_pythons(pids=[proc.pid], names=[], discovery=True)] == \
            [proc.pid]
    finally:
        proc.kill()
        proc.wait()


def test_own_interpreter_reads_as_cpython() -> None:
    p = read_python(os.getpid())
    assert p is not None and p.version == sys.version_info[:2] and is_cpython(p)

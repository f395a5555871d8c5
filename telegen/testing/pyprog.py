"""CPython programs under the ``python`` receiver, for end-to-end tests:
pyenv's interpreters, and the samples the agent's pprof files hold per process."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from telegen.formats.pprof import decode
from telegen.pdata import Frame
from telegen.semconv import PROCESS_PID, sample_attributes

PYENV_ROOT = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))


def pyenv_python(version: str) -> str | None:
    """pyenv's CPython ``version`` ("3.12") interpreter, the newest patch release, or None."""
    found = sorted(glob.glob(f"{PYENV_ROOT}/versions/{version}*/bin/python{version}"))
    return found[-1] if found else None


def require_pythons(versions: tuple[str, ...]) -> dict[str, str]:
    """version -> pyenv's interpreter, for each of ``versions``; fails the
    calling test (never skips) when py-spy or one of them is missing."""
    import pytest

    from telegen.receivers.python.pyspy import find_py_spy

    if find_py_spy() is None:
        pytest.fail("py-spy not found (pip install py-spy)", pytrace=False)
    found = {v: pyenv_python(v) for v in versions}
    missing = [v for v, exe in found.items() if exe is None]
    if missing:
        pytest.fail(f"pyenv's CPython {', '.join(missing)} not installed", pytrace=False)
    return {v: exe for v, exe in found.items() if exe is not None}


def pprof_samples(out: Path) -> Iterator[tuple[int, tuple[Frame, ...], int]]:
    """(pid, stack leaf first, first value) of every sample with a
    ``process.pid`` (label or resource) in every ``*.pb.gz`` file in ``out``."""
    for path in sorted(out.glob("*.pb.gz")):
        profile = decode(path.read_bytes())
        for s in profile:     # one process per file: its pid is the file's resource's
            pid = sample_attributes(profile, s).get(PROCESS_PID)
            if isinstance(pid, int) and s.stack:
                yield pid, s.stack, s.values[0]


def leaf_name(stack: tuple[Frame, ...]) -> str:
    return stack[0].name


def samples_by_pid(out: Path, key: Callable[[tuple[Frame, ...]], str] = leaf_name
                   ) -> dict[int, Counter[str]]:
    """pid -> ``key(stack)`` (the leaf function by default) -> samples."""
    by_pid: dict[int, Counter[str]] = {}
    for pid, stack, n in pprof_samples(out):
        by_pid.setdefault(pid, Counter())[key(stack)] += n
    return by_pid


def python_receiver_config(path: Path, process_name: str, rate: int, out: Path,
                           metrics_port: int) -> Path:
    """Write an agent configuration at ``path``: the ``python`` receiver on
    ``process_name`` at ``rate`` Hz (2 s windows, a scan every 0.5 s) into
    pprof files in ``out``, basic metrics on ``metrics_port``."""
    path.write_text(f"""
receivers:
  python:
    process_names: [{process_name}]
    sample_rate: {rate}
    duration: 2s
    scan_interval: 0.5s
exporters:
  pprof_file: {{directory: {out}}}
service:
  telemetry:
    metrics: {{level: basic, address: "127.0.0.1:{metrics_port}"}}
  pipelines:
    profiles: {{receivers: [python], exporters: [pprof_file]}}
""")
    return path
